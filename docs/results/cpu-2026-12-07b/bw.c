#include <immintrin.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <sys/mman.h>
#define SZ (256ul<<20)
static double now(){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec+t.tv_nsec*1e-9;}
static volatile float sinkf;
// 4 streams each SZ/4 apart, prefetch ahead bytes
static void probe(char*b,size_t n,int ahead){
  size_t q=n/4; __m512 a0=_mm512_setzero_ps(),a1=a0,a2=a0,a3=a0;
  for(size_t i=0;i<q;i+=64){
    if(ahead){_mm_prefetch(b+i+ahead,_MM_HINT_T0);_mm_prefetch(b+q+i+ahead,_MM_HINT_T0);_mm_prefetch(b+2*q+i+ahead,_MM_HINT_T0);_mm_prefetch(b+3*q+i+ahead,_MM_HINT_T0);}
    a0=_mm512_add_ps(a0,_mm512_load_ps(b+i));a1=_mm512_add_ps(a1,_mm512_load_ps(b+q+i));
    a2=_mm512_add_ps(a2,_mm512_load_ps(b+2*q+i));a3=_mm512_add_ps(a3,_mm512_load_ps(b+3*q+i));
  }
  sinkf=_mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(a0,a1),_mm512_add_ps(a2,a3)));
}
// tile pattern: rows of rb bytes, 4 rows a tile, prefetch next tile (hint) ; x vector fma
static void tile(char*b,size_t n,size_t rb,int hint,int pfmode){
  __m512 a0=_mm512_setzero_ps(),a1=a0,a2=a0,a3=a0; __m512 x=_mm512_set1_ps(1.0f);
  for(size_t t=0;t<n;t+=4*rb){
    char*r=b+t; char*pf=r+4*rb;
    for(size_t i=0;i<rb;i+=64){
      if(pfmode==1){ if(hint){_mm_prefetch(pf+i,_MM_HINT_T1);_mm_prefetch(pf+rb+i,_MM_HINT_T1);_mm_prefetch(pf+2*rb+i,_MM_HINT_T1);_mm_prefetch(pf+3*rb+i,_MM_HINT_T1);}
        else {_mm_prefetch(pf+i,_MM_HINT_T0);_mm_prefetch(pf+rb+i,_MM_HINT_T0);_mm_prefetch(pf+2*rb+i,_MM_HINT_T0);_mm_prefetch(pf+3*rb+i,_MM_HINT_T0);} }
      if(pfmode==2){ _mm_prefetch(r+i+2048,_MM_HINT_T0);_mm_prefetch(r+rb+i+2048,_MM_HINT_T0);_mm_prefetch(r+2*rb+i+2048,_MM_HINT_T0);_mm_prefetch(r+3*rb+i+2048,_MM_HINT_T0);}
      a0=_mm512_fmadd_ps(_mm512_load_ps(r+i),x,a0);a1=_mm512_fmadd_ps(_mm512_load_ps(r+rb+i),x,a1);
      a2=_mm512_fmadd_ps(_mm512_load_ps(r+2*rb+i),x,a2);a3=_mm512_fmadd_ps(_mm512_load_ps(r+3*rb+i),x,a3);
    }
  }
  sinkf=_mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(a0,a1),_mm512_add_ps(a2,a3)));
}
// sequential single stream with optional prefetch ahead
static void seq(char*b,size_t n,int ahead){
  __m512 a0=_mm512_setzero_ps(),a1=a0,a2=a0,a3=a0;
  for(size_t i=0;i<n;i+=256){
    if(ahead){_mm_prefetch(b+i+ahead,_MM_HINT_T0);_mm_prefetch(b+i+ahead+64,_MM_HINT_T0);_mm_prefetch(b+i+ahead+128,_MM_HINT_T0);_mm_prefetch(b+i+ahead+192,_MM_HINT_T0);}
    a0=_mm512_add_ps(a0,_mm512_load_ps(b+i));a1=_mm512_add_ps(a1,_mm512_load_ps(b+i+64));
    a2=_mm512_add_ps(a2,_mm512_load_ps(b+i+128));a3=_mm512_add_ps(a3,_mm512_load_ps(b+i+192));
  }
  sinkf=_mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(a0,a1),_mm512_add_ps(a2,a3)));
}
int main(int argc,char**argv){
  int huge=argc>1&&atoi(argv[1]);
  char*b=mmap(0,SZ+(8<<20),PROT_READ|PROT_WRITE,MAP_PRIVATE|MAP_ANONYMOUS,-1,0);
  b=(char*)(((size_t)b+(2<<20)-1)&~((size_t)(2<<20)-1));
  madvise(b,SZ,huge?MADV_HUGEPAGE:MADV_NOHUGEPAGE);
  memset(b,1,SZ+(2<<20));
  const char*names[]={"probe0","probe2K","seq0","seq2K","seq4K","tile4K-T0","tile4K-T1","tile4K-none","tile4K-ahead2K","tile8K-T0","tile8K-T1","tile2K-T0"};
  int nv=12; double best[12]={0}; double sum[12]={0};
  for(int round=0;round<8;round++) for(int v=0;v<nv;v++){
    double t0=now();
    switch(v){case 0:probe(b,SZ,0);break;case 1:probe(b,SZ,2048);break;case 2:seq(b,SZ,0);break;case 3:seq(b,SZ,2048);break;case 4:seq(b,SZ,4096);break;
    case 5:tile(b,SZ,4096,0,1);break;case 6:tile(b,SZ,4096,1,1);break;case 7:tile(b,SZ,4096,0,0);break;case 8:tile(b,SZ,4096,0,2);break;
    case 9:tile(b,SZ,8192,0,1);break;case 10:tile(b,SZ,8192,1,1);break;case 11:tile(b,SZ,2048,0,1);break;}
    double g=SZ/(now()-t0)/1e9; if(g>best[v])best[v]=g; sum[v]+=g;
  }
  for(int v=0;v<nv;v++) printf("%-16s best %6.1f mean %6.1f GB/s\n",names[v],best[v],sum[v]/8);
}
