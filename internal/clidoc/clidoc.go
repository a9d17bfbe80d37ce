// Package clidoc renders the command line's own flag sets as the reference (Markdown), the
// manual page (roff) and shell completions (bash, zsh, fish). Everything it writes comes from
// the flag sets the commands really parse, so none of it can list a flag the binary lacks or
// miss one it has.
package clidoc

import (
	"strings"

	"github.com/spf13/pflag"
)

// Command is the node itself (Name "") or one subcommand ("check", "block status").
type Command struct {
	Name  string
	Usage string // what follows "dialtrap " in the synopsis; may hold several lines
	About string // what it does, plain text, hard-wrapped lines allowed
	Flags *pflag.FlagSet
	Args  ArgKind // what its operands are, for completions (ArgFile: import FILE...)
	// Words are the operands it takes from a fixed list (completion: bash, zsh, fish).
	Words []string
	// Summary is the one line completion menus show; the first line of About when empty.
	Summary string
}

// ExitCode is one exit status and what it means.
type ExitCode struct {
	Code    int
	Command string // "" for every command
	Meaning string
}

// Doc is the whole command line.
type Doc struct {
	Node        Command
	Subcommands []Command
	// Env gives the environment variable of a node option, the reference product's names read
	// when it is unset, and whether the TOML file may set the option.
	Env       func(long string) (name string, legacy []string, inFile bool)
	ExitCodes []ExitCode
	// Prose is the Markdown and manual text that is not about a single flag: precedence,
	// signals, files. Keyed by section title, rendered in order.
	Prose []Section
}

// Section is a titled piece of prose; Text is plain paragraphs separated by blank lines.
type Section struct {
	Title string
	Text  string
}

// Option is one flag as the renderers see it.
type Option struct {
	Long, Short string
	Arg         string // the value's name; "" for a boolean
	Default     string // "" when there is nothing worth saying (false, empty, [])
	Usage       string
	Kind        ArgKind
}

// ArgKind says what a flag's value is, for completions.
type ArgKind int

const (
	ArgNone ArgKind = iota // a boolean: takes no value
	ArgWord                // some value the shell cannot guess
	ArgFile
	ArgDir
)

// Options lists a flag set's flags in their declared order, -h last as declared.
func Options(fs *pflag.FlagSet) []Option {
	var out []Option
	fs.VisitAll(func(f *pflag.Flag) {
		if f.Hidden {
			return
		}
		arg, usage := pflag.UnquoteUsage(f)
		o := Option{Long: f.Name, Short: f.Shorthand, Arg: arg, Usage: usage, Kind: kind(f, arg)}
		switch f.DefValue {
		case "", "false", "[]", "0s":
		default:
			if arg != "" {
				o.Default = f.DefValue
			}
		}
		if arg == "" && f.DefValue == "true" {
			o.Default = "true"
		}
		out = append(out, o)
	})
	return out
}

// kind guesses from the flag's name what its value is. Names are the project's own, and they
// say it: --db-file, --data-dir, --tls-cert, --config.
func kind(f *pflag.Flag, arg string) ArgKind {
	if arg == "" {
		return ArgNone
	}
	n := f.Name
	switch {
	case strings.HasSuffix(n, "-dir"):
		return ArgDir
	case strings.HasSuffix(n, "-file"), strings.HasSuffix(n, "-cert"), n == "tls-key",
		strings.HasSuffix(n, "-profile"), n == "config", n == "output":
		return ArgFile
	}
	return ArgWord
}

// firstSentence cuts a usage text to its first clause, for completion menus.
func firstSentence(s string) string {
	for _, sep := range []string{": ", "; ", " (", ". "} {
		if i := strings.Index(s, sep); i > 0 {
			s = s[:i]
		}
	}
	const max = 72
	if len(s) > max {
		s = s[:max-3] + "..."
	}
	return s
}

// subcommandWords are the words that name a subcommand at the first position, with their
// one-line descriptions; "block status" is reached through "block".
func (d Doc) subcommandWords() []Command {
	var out []Command
	for _, c := range d.Subcommands {
		if !strings.Contains(c.Name, " ") {
			out = append(out, c)
		}
	}
	return out
}

// children are the second-level subcommands of a first-level one ("status" of "block").
func (d Doc) children(parent string) []Command {
	var out []Command
	for _, c := range d.Subcommands {
		if p, _, ok := strings.Cut(c.Name, " "); ok && p == parent {
			out = append(out, c)
		}
	}
	return out
}

// summary is a command's one-line description: the first line of its About.
func summary(c Command) string {
	if c.Summary != "" {
		return c.Summary
	}
	s, _, _ := strings.Cut(c.About, "\n")
	return strings.TrimSuffix(s, ".")
}
