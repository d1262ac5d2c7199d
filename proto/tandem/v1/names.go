package tandemv1

import "strings"

// Name is the finish reason without its enum prefix, lower case: "stop",
// "length", "abort", "timeout", "error" ("unspecified" for the zero
// value). The coordinator's metric labels and the CLI's output use it.
func (r FinishReason) Name() string {
	return strings.ToLower(strings.TrimPrefix(r.String(), "FINISH_REASON_"))
}

// Name is the role without its enum prefix, lower case: "prefill",
// "decode", "unified" ("unspecified" for the zero value), the words
// etcd registrations and the --role flag use.
func (r Role) Name() string {
	return strings.ToLower(strings.TrimPrefix(r.String(), "ROLE_"))
}
