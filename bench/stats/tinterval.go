package stats

import (
	"errors"
	"math"
)

// TInterval is the Student-t interval of the mean of paired differences
// (one per round) at the given level. A bootstrap over a handful of
// rounds is overconfident (three rounds that agree in sign would give a
// verdict a quarter of the time with no real difference); the t interval
// keeps its level for few rounds when the rounds' differences are about
// normal.
func TInterval(diffs []float64, level float64) (Interval, error) {
	n := len(diffs)
	if n < 2 {
		return Interval{}, errors.New("stats: a t interval needs two or more values")
	}
	m, sd := Mean(diffs), Std(diffs)*math.Sqrt(float64(n)/float64(n-1))
	half := tQuantile(1-(1-level)/2, float64(n-1)) * sd / math.Sqrt(float64(n))
	return Interval{Diff: m, Lo: m - half, Hi: m + half, Level: level}, nil
}

// tQuantile is the p quantile (p > 0.5) of Student's t with df degrees
// of freedom, by bisection on its distribution function.
func tQuantile(p, df float64) float64 {
	lo, hi := 0.0, 1.0
	for tCDF(hi, df) < p {
		hi *= 2
	}
	for range 200 {
		mid := (lo + hi) / 2
		if tCDF(mid, df) < p {
			lo = mid
		} else {
			hi = mid
		}
	}
	return (lo + hi) / 2
}

// tCDF is Student's t distribution function at t >= 0.
func tCDF(t, df float64) float64 {
	return 1 - 0.5*incBeta(df/2, 0.5, df/(df+t*t))
}

// incBeta is the regularized incomplete beta function I_x(a, b), by its
// continued fraction (Lentz's method).
func incBeta(a, b, x float64) float64 {
	if x <= 0 {
		return 0
	}
	if x >= 1 {
		return 1
	}
	la, _ := math.Lgamma(a + b)
	lb, _ := math.Lgamma(a)
	lc, _ := math.Lgamma(b)
	front := math.Exp(la - lb - lc + a*math.Log(x) + b*math.Log(1-x))
	if x > (a+1)/(a+b+2) {
		return 1 - incBeta(b, a, 1-x)
	}
	const tiny = 1e-300
	f, c, d := 1.0, 1.0, 0.0
	for i := 0; i <= 400; i++ {
		m := float64(i / 2)
		var num float64
		switch {
		case i == 0:
			num = 1
		case i%2 == 0:
			num = m * (b - m) * x / ((a + 2*m - 1) * (a + 2*m))
		default:
			num = -(a + m) * (a + b + m) * x / ((a + 2*m) * (a + 2*m + 1))
		}
		d = 1 + num*d
		if math.Abs(d) < tiny {
			d = tiny
		}
		d = 1 / d
		c = 1 + num/c
		if math.Abs(c) < tiny {
			c = tiny
		}
		cd := c * d
		f *= cd
		if math.Abs(1-cd) < 1e-12 {
			break
		}
	}
	return front * (f - 1) / a
}
