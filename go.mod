module github.com/tandemllm/tandem

go 1.26
