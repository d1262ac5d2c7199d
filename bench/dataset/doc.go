// Package dataset builds the prompts of a load test, as `vllm bench serve`
// does: "random" (prompts of exact token lengths made from the target's
// vocabulary), "prefix_repetition" (random prompts sharing a few random
// prefixes, for prefix caching), "sharegpt" (the first human turn of
// ShareGPT conversations) and "jsonl" (one {"prompt": ...,
// "output_tokens": ...} object a line). The same options and seed always give byte-identical
// prompts in the same order.
//
// It imports nothing of Tandem's: the tokenizer is an interface that
// model/tokenizer satisfies.
package dataset
