package metrics

// Bucket layouts. They are functions, not package variables, so that no
// caller can change a shared slice; each returns a fresh copy.

// ttftBuckets are vLLM's buckets of vllm:time_to_first_token_seconds.
func ttftBuckets() []float64 {
	return []float64{
		0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5,
		0.75, 1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0, 160.0, 640.0,
		2560.0,
	}
}

// tokenLatencyBuckets are vLLM's buckets of vllm:inter_token_latency_seconds
// and vllm:request_time_per_output_token_seconds (the same list).
func tokenLatencyBuckets() []float64 {
	return []float64{
		0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75,
		1.0, 2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0,
	}
}

// requestLatencyBuckets are vLLM's buckets of
// vllm:e2e_request_latency_seconds and vllm:request_queue_time_seconds.
func requestLatencyBuckets() []float64 {
	return []float64{
		0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0,
		40.0, 50.0, 60.0, 120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0,
	}
}

// requestTokenBuckets are 1-2-5 buckets up to a million tokens. vLLM
// builds the same series up to the model's max_model_len; a fixed bound
// keeps NewCoordinator independent of the model's config and covers
// every context length Tandem serves.
func requestTokenBuckets() []float64 {
	return []float64{
		1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000,
		10000, 20000, 50000, 100000, 200000, 500000, 1000000,
	}
}

// iterationTokenBuckets are vLLM's buckets of vllm:iteration_tokens_total.
func iterationTokenBuckets() []float64 {
	return []float64{1, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384}
}

// stepBuckets cover one step's compute or sampling time, from a small
// model's decode step on a GPU (sub-millisecond) to a long CPU prefill.
// vLLM has no step-time histogram; these are Tandem's own.
func stepBuckets() []float64 {
	return []float64{
		0.0005, 0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1,
		0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
	}
}
