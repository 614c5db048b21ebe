package config

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
)

// flagValue stores a flag's text in a settings field unparsed, so that every
// bad value is reported together with the other problems.
type flagValue struct {
	v      *value
	from   string
	isBool bool
}

// String returns "": flag defaults are documented from the settings table, and
// a value (possibly a secret) is never echoed.
func (f *flagValue) String() string { return "" }

// Set records the flag's text; an empty text leaves the setting unset.
func (f *flagValue) Set(s string) error {
	if s != "" {
		*f.v = value{text: s, from: f.from, set: true}
	}
	return nil
}

// IsBoolFlag lets boolean settings be given as a bare --flag.
func (f *flagValue) IsBoolFlag() bool { return f.isBool }

// parseFlags parses args into out, allowing positional arguments before,
// between and after flags; everything after "--" is positional. Problems go
// to p; the returned error is only flag.ErrHelp.
func parseFlags(name string, args []string, table []field, out *settings, extra func(*flag.FlagSet), p *parser) (*flag.FlagSet, []string, error) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	for _, f := range table {
		if f.flag != "" {
			fs.Var(&flagValue{v: out.at(f), from: "--" + f.flag, isBool: f.bool}, f.flag, f.doc)
		}
	}
	if extra != nil {
		extra(fs)
	}

	var positional []string
	rest := args
	for len(rest) > 0 {
		err := fs.Parse(rest)
		if errors.Is(err, flag.ErrHelp) {
			return fs, nil, err
		}
		next := fs.Args()
		if err != nil {
			// The flag package has already skipped the bad argument, so
			// parsing can go on and report later problems too.
			p.problems = append(p.problems, "command line: "+err.Error())
			rest = next
			continue
		}
		if consumed := len(rest) - len(next); consumed > 0 && rest[consumed-1] == "--" {
			positional = append(positional, next...)
			break
		}
		if len(next) > 0 {
			positional = append(positional, next[0])
			next = next[1:]
		}
		rest = next
	}
	return fs, positional, nil
}

// writeUsage prints every flag with its environment variable, YAML key and
// default, then the settings without a flag. Secrets have no default, and
// current values are never printed. The caller prints the synopsis first.
func writeUsage(w io.Writer, fs *flag.FlagSet, table []field) {
	var b strings.Builder
	b.WriteString("Flags (highest precedence; then environment, then the --config YAML file, then defaults):\n")
	known := map[string]bool{}
	for _, f := range table {
		if f.flag == "" {
			continue
		}
		known[f.flag] = true
		arg := " value"
		if f.bool {
			arg = "[=true|false]"
		}
		fmt.Fprintf(&b, "  --%s%s\n    \t%s\n", f.flag, arg, describe(f))
	}
	fs.VisitAll(func(fl *flag.Flag) {
		if known[fl.Name] {
			return
		}
		fmt.Fprintf(&b, "  --%s\n    \t%s", fl.Name, fl.Usage)
		if fl.DefValue != "" {
			fmt.Fprintf(&b, " (default %s)", fl.DefValue)
		}
		b.WriteString("\n")
	})
	b.WriteString("\nSettings without a flag (environment or YAML file):\n")
	for _, f := range table {
		if f.flag == "" {
			fmt.Fprintf(&b, "  %s\n    \t%s\n", f.env, describe(f))
		}
	}
	_, _ = io.WriteString(w, b.String())
}

func describe(f field) string {
	var where []string
	if f.flag != "" {
		where = append(where, "env "+f.env)
	}
	if f.key != "" {
		where = append(where, "yaml "+f.key)
	}
	if f.show != "" {
		where = append(where, "default "+f.show)
	}
	if len(where) == 0 {
		return f.doc
	}
	return f.doc + " (" + strings.Join(where, ", ") + ")"
}
