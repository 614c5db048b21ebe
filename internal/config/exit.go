package config

import "errors"

// UsageError is a command-line mistake other than a configuration problem,
// such as an unknown verb or a malformed argument.
type UsageError struct{ Msg string }

func (e UsageError) Error() string { return e.Msg }

// ExitStatus maps a binary's final error to its exit status: 0 for nil, 2
// for configuration and usage errors (*Error, UsageError), 1 otherwise.
func ExitStatus(err error) int {
	var cerr *Error
	var uerr UsageError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &cerr), errors.As(err, &uerr):
		return 2
	default:
		return 1
	}
}
