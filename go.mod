module github.com/tandemllm/tandem

go 1.26.0

require (
	github.com/dlclark/regexp2/v2 v2.5.1
	github.com/spf13/cobra v1.10.2
	github.com/spf13/pflag v1.0.9
	github.com/tiktoken-go/tokenizer v0.10.0
	golang.org/x/sys v0.49.0
	golang.org/x/text v0.43.0
)

require github.com/inconshreveable/mousetrap v1.1.0 // indirect
