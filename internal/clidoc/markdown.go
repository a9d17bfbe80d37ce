package clidoc

import (
	"fmt"
	"strings"
)

// Markdown renders the command-line reference. regenerate is the command that rewrites the
// file, named in its first lines so that nobody edits it by hand.
func Markdown(d Doc, regenerate string) []byte {
	var b strings.Builder
	fmt.Fprintf(&b, "# Command-line reference\n\n")
	fmt.Fprintf(&b, "<!-- Generated from the flag sets the commands parse; do not edit. Rewrite with: %s -->\n\n", regenerate)
	b.WriteString("Every flag, environment variable, TOML key and exit status of `dialtrap`, as the binary\n")
	b.WriteString("declares them. A test fails when this file and the code differ.\n\n")
	b.WriteString("- [The node: `dialtrap [flags]`](#the-node)\n")
	for _, c := range d.Subcommands {
		fmt.Fprintf(&b, "- [`dialtrap %s`](#%s)\n", c.Name, Anchor("dialtrap "+c.Name))
	}
	b.WriteString("- [Exit status](#exit-status)\n")
	for _, s := range d.Prose {
		fmt.Fprintf(&b, "- [%s](#%s)\n", s.Title, Anchor(s.Title))
	}

	b.WriteString("\n## The node\n\n")
	fmt.Fprintf(&b, "```\ndialtrap %s\n```\n\n", d.Node.Usage)
	b.WriteString(mdText(d.Node.About))
	b.WriteString("| flag | environment variable | default | meaning |\n|---|---|---|---|\n")
	for _, o := range Options(d.Node.Flags) {
		env, legacy, inFile := d.Env(o.Long)
		envCell := ""
		if o.Long != "help" && o.Long != "version" {
			envCell = "`" + env + "`"
			if len(legacy) > 0 {
				envCell += " (also " + codeList(legacy) + ")"
			}
		}
		meaning := mdCell(o.Usage)
		if !inFile {
			if !strings.HasSuffix(meaning, ".") {
				meaning += "."
			}
			meaning += " Not read from the TOML file."
		}
		fmt.Fprintf(&b, "| %s | %s | %s | %s |\n", mdFlag(o), envCell, mdDefault(o), meaning)
	}
	b.WriteString("\n")

	for _, c := range d.Subcommands {
		fmt.Fprintf(&b, "## dialtrap %s\n\n", c.Name)
		fmt.Fprintf(&b, "```\ndialtrap %s\n```\n\n", c.Usage)
		b.WriteString(mdText(c.About))
		opts := Options(c.Flags)
		if len(opts) == 0 {
			continue
		}
		b.WriteString("| flag | default | meaning |\n|---|---|---|\n")
		for _, o := range opts {
			fmt.Fprintf(&b, "| %s | %s | %s |\n", mdFlag(o), mdDefault(o), mdCell(o.Usage))
		}
		b.WriteString("\n")
	}

	b.WriteString("## Exit status\n\n| status | command | meaning |\n|---|---|---|\n")
	for _, e := range d.ExitCodes {
		cmd := "every command"
		if e.Command != "" {
			cmd = "`dialtrap " + e.Command + "`"
		}
		fmt.Fprintf(&b, "| %d | %s | %s |\n", e.Code, cmd, mdCell(e.Meaning))
	}
	b.WriteString("\n")
	for _, s := range d.Prose {
		fmt.Fprintf(&b, "## %s\n\n%s", s.Title, mdText(s.Text))
	}
	return []byte(b.String())
}

// Anchor is the fragment GitHub-style Markdown gives a heading: lower case, spaces as dashes,
// other punctuation dropped. The reference's tables of contents link with it; the docs test
// checks every link's fragment with it.
func Anchor(title string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(strings.TrimSpace(title)) {
		switch {
		case r >= 'a' && r <= 'z', r >= '0' && r <= '9', r == '-', r == '_', r > 127:
			b.WriteRune(r)
		case r == ' ':
			b.WriteByte('-')
		}
	}
	return b.String()
}

func mdFlag(o Option) string {
	s := "`--" + o.Long
	if o.Arg != "" {
		s += " " + o.Arg
	}
	s += "`"
	if o.Short != "" {
		s = "`-" + o.Short + "`, " + s
	}
	return s
}

func mdDefault(o Option) string {
	if o.Default == "" {
		return ""
	}
	return "`" + strings.ReplaceAll(o.Default, "|", `\|`) + "`"
}

func codeList(names []string) string {
	q := make([]string, len(names))
	for i, n := range names {
		q[i] = "`" + n + "`"
	}
	return strings.Join(q, ", ")
}

// mdCell makes text fit one table cell: one line, pipes escaped.
func mdCell(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	s = strings.ReplaceAll(s, "|", `\|`)
	s = strings.ReplaceAll(s, "<", "&lt;")
	if s != "" && !strings.HasSuffix(s, ".") && !strings.HasSuffix(s, ")") {
		s += "."
	}
	return s
}

// mdText renders hard-wrapped prose: blank lines part paragraphs; a line that starts with
// two spaces is kept as an indented block.
func mdText(s string) string {
	if strings.TrimSpace(s) == "" {
		return ""
	}
	var b strings.Builder
	for _, para := range strings.Split(strings.TrimSpace(s), "\n\n") {
		if strings.HasPrefix(para, "  ") {
			fmt.Fprintf(&b, "```\n%s\n```\n\n", strings.TrimRight(para, "\n"))
			continue
		}
		b.WriteString(strings.ReplaceAll(strings.ReplaceAll(para, "<", "&lt;"), "\n", " "))
		b.WriteString("\n\n")
	}
	return b.String()
}
