package clidoc

import (
	"fmt"
	"strings"
)

// Man renders the manual page dialtrap(1). It carries no date or version, so that the same
// code always gives the same bytes (packages are built reproducibly).
func Man(d Doc) []byte {
	var b strings.Builder
	b.WriteString(".\\\" Generated from the flag sets the commands parse; do not edit.\n")
	b.WriteString(".TH DIALTRAP 1 \"\" \"dialtrap\" \"User Commands\"\n")
	b.WriteString(".SH NAME\ndialtrap \\- SIP honeypot and VoIP fraud\\-detection node\n")
	b.WriteString(".SH SYNOPSIS\n")
	fmt.Fprintf(&b, ".B dialtrap\n%s\n.br\n", roff(d.Node.Usage))
	for _, c := range d.Subcommands {
		fmt.Fprintf(&b, ".B dialtrap\n%s\n.br\n", roff(firstLine(c.Usage)))
	}
	b.WriteString(".SH DESCRIPTION\n")
	b.WriteString(manText(d.Node.About))
	b.WriteString(".SH OPTIONS\n")
	for _, o := range Options(d.Node.Flags) {
		manOption(&b, o)
		env, legacy, inFile := d.Env(o.Long)
		if o.Long == "help" || o.Long == "version" {
			continue
		}
		line := "Environment: " + env
		if len(legacy) > 0 {
			line += " (also " + strings.Join(legacy, ", ") + ")"
		}
		if !inFile {
			line += "; not read from the TOML file"
		}
		fmt.Fprintf(&b, ".br\n%s.\n", roff(line))
	}
	b.WriteString(".SH SUBCOMMANDS\n")
	for _, c := range d.Subcommands {
		fmt.Fprintf(&b, ".SS \"dialtrap %s\"\n", roffQuoted(c.Name))
		for _, line := range strings.Split(c.Usage, "\n") {
			fmt.Fprintf(&b, ".B dialtrap\n%s\n.br\n", roff(strings.TrimPrefix(strings.TrimSpace(line), "dialtrap ")))
		}
		b.WriteString(manText(c.About))
		for _, o := range Options(c.Flags) {
			manOption(&b, o)
		}
	}
	b.WriteString(".SH \"EXIT STATUS\"\n")
	for _, e := range d.ExitCodes {
		who := ""
		if e.Command != "" {
			who = " (dialtrap " + e.Command + ")"
		}
		fmt.Fprintf(&b, ".TP\n.B %d\n%s%s\n", e.Code, roff(e.Meaning), roff(who))
	}
	for _, s := range d.Prose {
		fmt.Fprintf(&b, ".SH \"%s\"\n%s", roffQuoted(strings.ToUpper(s.Title)), manText(s.Text))
	}
	b.WriteString(".SH \"SEE ALSO\"\n")
	b.WriteString("The guides and the reference in the project's docs/ directory, which the packages install\n" +
		"in /usr/share/doc/dialtrap/docs: reference/cli.md, reference/api.md, reference/events.md,\n" +
		"guides/quick-start.md.\n")
	return []byte(b.String())
}

func manOption(b *strings.Builder, o Option) {
	b.WriteString(".TP\n")
	head := ""
	if o.Short != "" {
		head = "\\fB\\-" + roffWord(o.Short) + "\\fR, "
	}
	head += "\\fB\\-\\-" + roffWord(o.Long) + "\\fR"
	if o.Arg != "" {
		head += " \\fI" + roffWord(o.Arg) + "\\fR"
	}
	b.WriteString(head + "\n")
	text := strings.Join(strings.Fields(o.Usage), " ")
	if o.Default != "" && !strings.Contains(text, "(default") {
		text += " (default: " + o.Default + ")"
	}
	b.WriteString(roff(text) + "\n")
}

func firstLine(s string) string {
	l, _, _ := strings.Cut(s, "\n")
	return l
}

// manText renders prose: blank lines part paragraphs; an indented paragraph is kept as is.
func manText(s string) string {
	if strings.TrimSpace(s) == "" {
		return ""
	}
	var b strings.Builder
	for i, para := range strings.Split(strings.TrimSpace(s), "\n\n") {
		if i > 0 {
			b.WriteString(".PP\n")
		}
		if strings.HasPrefix(para, "  ") {
			b.WriteString(".nf\n")
			for _, l := range strings.Split(para, "\n") {
				b.WriteString(roff(l) + "\n")
			}
			b.WriteString(".fi\n")
			continue
		}
		b.WriteString(roff(strings.Join(strings.Fields(para), " ")) + "\n")
	}
	return b.String()
}

// roff escapes text for a roff text line: backslashes, hyphens (so that options copy and
// paste as ASCII) and a leading dot or quote, which roff would take for a request.
func roff(s string) string {
	s = roffWord(s)
	if strings.HasPrefix(s, ".") || strings.HasPrefix(s, "'") {
		s = `\&` + s
	}
	return s
}

func roffWord(s string) string {
	s = strings.ReplaceAll(s, `\`, `\e`)
	return strings.ReplaceAll(s, "-", `\-`)
}

func roffQuoted(s string) string {
	return strings.ReplaceAll(roffWord(s), `"`, `\(dq`)
}
