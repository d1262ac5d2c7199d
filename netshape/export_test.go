package netshape

import (
	"context"
	"fmt"
	"strings"
)

// FailWhen makes New's command whose line contains every one of words
// fail, as a broken step of a real start would.
func FailWhen(opts *Options, words ...string) {
	opts.run = func(ctx context.Context, argv ...string) (string, error) {
		line := strings.Join(argv, " ")
		hit := true
		for _, w := range words {
			hit = hit && strings.Contains(line, w)
		}
		if hit {
			return "", fmt.Errorf("%s: injected failure", line)
		}
		return runCommand(ctx, argv...)
	}
}

// Owner is owner, for the tests of name parsing.
var Owner = owner

// TBF is tbf.
var TBF = tbf
