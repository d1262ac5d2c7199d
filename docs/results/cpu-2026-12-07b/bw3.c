#include <immintrin.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/mman.h>
#define SZ (256ul<<20)
static double now(){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec+t.tv_nsec*1e-9;}
static volatile float sinkf;
static float xbuf[4096] __attribute__((aligned(64)));
// tile of 4 rows at stride ld (bytes), rb bytes each, prefetch pf rows at stride pfs, mode 0 none 1 T0
static inline float tile4(char*w,size_t ld,size_t rb,char*pf,size_t pfs,int mode){
  __m512 a0=_mm512_setzero_ps(),a1=a0,a2=a0,a3=a0;
  for(size_t i=0;i<rb;i+=64){
    if(mode){_mm_prefetch(pf+i,_MM_HINT_T0);_mm_prefetch(pf+pfs+i,_MM_HINT_T0);_mm_prefetch(pf+2*pfs+i,_MM_HINT_T0);_mm_prefetch(pf+3*pfs+i,_MM_HINT_T0);}
    __m512 x=_mm512_load_ps((char*)xbuf+i);
    a0=_mm512_fmadd_ps(_mm512_load_ps(w+i),x,a0);a1=_mm512_fmadd_ps(_mm512_load_ps(w+ld+i),x,a1);
    a2=_mm512_fmadd_ps(_mm512_load_ps(w+2*ld+i),x,a2);a3=_mm512_fmadd_ps(_mm512_load_ps(w+3*ld+i),x,a3);
  }
  return _mm512_reduce_add_ps(a0)+_mm512_reduce_add_ps(a1)+_mm512_reduce_add_ps(a2)+_mm512_reduce_add_ps(a3);
}
// chunked like MatMul: chunks of cr rows; contiguous tiles or bands
static void run(char*b,size_t n,size_t rb,size_t cr,int bands,int mode){
  float s=0; size_t rows=n/rb;
  for(size_t c0=0;c0<rows;c0+=cr){
    char*cb=b+c0*rb;
    if(!bands){ for(size_t r=0;r<cr;r+=4) s+=tile4(cb+r*rb,rb,rb,cb+(r+4)*rb,rb,mode); }
    else { size_t band=cr/4; for(size_t j=0;j<band;j++) s+=tile4(cb+j*rb,band*rb,rb,cb+(j+1)*rb,band*rb,mode); }
  }
  sinkf=s;
}
int main(int argc,char**argv){
  char*b=mmap(0,SZ+(8<<20),PROT_READ|PROT_WRITE,MAP_PRIVATE|MAP_ANONYMOUS,-1,0);
  b=(char*)(((size_t)b+(2<<20)-1)&~((size_t)(2<<20)-1));
  madvise(b,SZ,MADV_HUGEPAGE);
  memset(b,1,SZ+(2<<20)); for(int i=0;i<4096;i++)xbuf[i]=1;
  const char*names[]={"contig-T0 4K","contig-none 4K","bands-T0 4K","bands-none 4K","contig-T0 8K","bands-T0 8K","bands-none 8K","bands-none 4K c64"};
  int nv=8; double best[8]={0}; double sum[8]={0};
  for(int round=0;round<8;round++) for(int v=0;v<nv;v++){
    double t0=now();
    switch(v){case 0:run(b,SZ,4096,256,0,1);break;case 1:run(b,SZ,4096,256,0,0);break;case 2:run(b,SZ,4096,256,1,1);break;case 3:run(b,SZ,4096,256,1,0);break;
    case 4:run(b,SZ,8192,256,0,1);break;case 5:run(b,SZ,8192,256,1,1);break;case 6:run(b,SZ,8192,256,1,0);break;case 7:run(b,SZ,4096,64,1,0);break;}
    double g=SZ/(now()-t0)/1e9; if(g>best[v])best[v]=g; sum[v]+=g;
  }
  for(int v=0;v<nv;v++) printf("%-18s best %6.1f mean %6.1f GB/s\n",names[v],best[v],sum[v]/8);
}
