package clidoc

import (
	"fmt"
	"strings"
)

const generated = "# Generated from the flag sets dialtrap parses; do not edit (dialtrap completion SHELL).\n"

// Bash renders a completion function for bash. It needs nothing beyond bash itself (not the
// bash-completion package): subcommand names at the first position, each command's flags,
// files or directories after flags that take them.
func Bash(d Doc) []byte {
	var b strings.Builder
	b.WriteString("# bash completion for dialtrap\n" + generated)
	b.WriteString("_dialtrap() {\n")
	b.WriteString("    local cur=${COMP_WORDS[COMP_CWORD]} prev=${COMP_WORDS[COMP_CWORD-1]} cmd=\"\"\n")
	b.WriteString("    COMPREPLY=()\n")
	b.WriteString("    if ((COMP_CWORD > 1)); then\n        case ${COMP_WORDS[1]} in\n")
	for _, c := range d.subcommandWords() {
		fmt.Fprintf(&b, "        %s) cmd=%s ;;\n", c.Name, c.Name)
	}
	b.WriteString("        esac\n    fi\n")
	for _, c := range d.subcommandWords() {
		for _, ch := range d.children(c.Name) {
			_, word, _ := strings.Cut(ch.Name, " ")
			fmt.Fprintf(&b, "    if [[ $cmd == %s && ${COMP_WORDS[2]} == %s ]] && ((COMP_CWORD > 2)); then cmd=\"%s\"; fi\n", c.Name, word, ch.Name)
		}
	}
	// What the previous word wants as a value.
	b.WriteString("    case \"$cmd|$prev\" in\n")
	for _, c := range append([]Command{d.Node}, d.Subcommands...) {
		var files, dirs, words []string
		for _, o := range Options(c.Flags) {
			names := []string{"--" + o.Long}
			if o.Short != "" {
				names = append(names, "-"+o.Short)
			}
			for _, n := range names {
				p := fmt.Sprintf("\"%s|%s\"", c.Name, n)
				switch o.Kind {
				case ArgFile:
					files = append(files, p)
				case ArgDir:
					dirs = append(dirs, p)
				case ArgWord:
					words = append(words, p)
				}
			}
		}
		if len(files) > 0 {
			fmt.Fprintf(&b, "    %s)\n        COMPREPLY=($(compgen -f -- \"$cur\")); return ;;\n", strings.Join(files, "|"))
		}
		if len(dirs) > 0 {
			fmt.Fprintf(&b, "    %s)\n        COMPREPLY=($(compgen -d -- \"$cur\")); return ;;\n", strings.Join(dirs, "|"))
		}
		if len(words) > 0 {
			fmt.Fprintf(&b, "    %s)\n        return ;;\n", strings.Join(words, "|"))
		}
	}
	b.WriteString("    esac\n")
	b.WriteString("    local words\n    case $cmd in\n")
	for _, c := range append([]Command{d.Node}, d.Subcommands...) {
		var opts []string
		for _, o := range Options(c.Flags) {
			opts = append(opts, "--"+o.Long)
			if o.Short != "" {
				opts = append(opts, "-"+o.Short)
			}
		}
		for _, ch := range d.children(c.Name) {
			_, word, _ := strings.Cut(ch.Name, " ")
			opts = append(opts, word)
		}
		opts = append(opts, c.Words...)
		fmt.Fprintf(&b, "    \"%s\") words=\"%s\" ;;\n", c.Name, strings.Join(opts, " "))
	}
	b.WriteString("    esac\n")
	var subs []string
	for _, c := range d.subcommandWords() {
		subs = append(subs, c.Name)
	}
	fmt.Fprintf(&b, "    if ((COMP_CWORD == 1)) && [[ $cur != -* ]]; then words=\"%s\"; fi\n", strings.Join(subs, " "))
	for _, c := range d.Subcommands {
		if c.Args == ArgFile {
			fmt.Fprintf(&b, "    if [[ $cmd == \"%s\" && $cur != -* ]]; then COMPREPLY=($(compgen -f -- \"$cur\")); return; fi\n", c.Name)
		}
	}
	b.WriteString("    COMPREPLY=($(compgen -W \"$words\" -- \"$cur\"))\n")
	b.WriteString("}\ncomplete -F _dialtrap dialtrap\n")
	return []byte(b.String())
}

// Zsh renders a completion function for zsh (the _dialtrap file of a directory in $fpath).
func Zsh(d Doc) []byte {
	var b strings.Builder
	b.WriteString("#compdef dialtrap\n" + generated)
	zshSpecs := func(c Command) string {
		var specs []string
		for _, o := range Options(c.Flags) {
			desc := zshEscape(firstSentence(o.Usage))
			action := ""
			switch o.Kind {
			case ArgFile:
				action = ":" + zshEscape(o.Arg) + ":_files"
			case ArgDir:
				action = ":" + zshEscape(o.Arg) + ":_files -/"
			case ArgWord:
				action = ":" + zshEscape(o.Arg) + ": "
			}
			if o.Short != "" {
				specs = append(specs, fmt.Sprintf("'(-%s --%s)'{-%s,--%s}'[%s]%s'", o.Short, o.Long, o.Short, o.Long, desc, action))
			} else {
				specs = append(specs, fmt.Sprintf("'--%s[%s]%s'", o.Long, desc, action))
			}
		}
		return strings.Join(specs, " \\\n    ")
	}
	b.WriteString("\n_dialtrap() {\n")
	b.WriteString("  local -a subcommands\n  subcommands=(\n")
	for _, c := range d.subcommandWords() {
		fmt.Fprintf(&b, "    '%s:%s'\n", c.Name, zshEscape(summary(c)))
	}
	b.WriteString("  )\n")
	b.WriteString("  if (( CURRENT == 2 )) && [[ $PREFIX != -* ]]; then\n")
	b.WriteString("    _describe -t commands 'dialtrap subcommand' subcommands\n    return\n  fi\n")
	b.WriteString("  local sub=$words[2]\n")
	for _, c := range d.subcommandWords() {
		for _, ch := range d.children(c.Name) {
			_, word, _ := strings.Cut(ch.Name, " ")
			fmt.Fprintf(&b, "  if [[ $sub == %s && $words[3] == %s ]] && (( CURRENT > 3 )); then sub='%s'; fi\n", c.Name, word, ch.Name)
		}
	}
	b.WriteString("  case $sub in\n")
	for _, c := range d.Subcommands {
		shift := 1
		if strings.Contains(c.Name, " ") {
			shift = 2
		}
		extra := "'*:argument: '"
		if c.Args == ArgFile {
			extra = "'*:file:_files'"
		}
		if len(c.Words) > 0 {
			extra = "'1:" + c.Name + ":(" + strings.Join(c.Words, " ") + ")'"
		}
		if ch := d.children(c.Name); len(ch) > 0 {
			var w []string
			for _, x := range ch {
				_, word, _ := strings.Cut(x.Name, " ")
				w = append(w, word)
			}
			extra = "'1::subcommand:(" + strings.Join(w, " ") + ")'"
		}
		fmt.Fprintf(&b, "  '%s')\n    shift %d words; (( CURRENT -= %d ))\n    _arguments -s : \\\n    %s \\\n    %s\n    ;;\n", c.Name, shift, shift, zshSpecs(c), extra)
	}
	fmt.Fprintf(&b, "  *)\n    _arguments -s : \\\n    %s\n    ;;\n  esac\n}\n\n_dialtrap \"$@\"\n", zshSpecs(d.Node))
	return []byte(b.String())
}

func zshEscape(s string) string {
	r := strings.NewReplacer("'", `'\''`, "[", "(", "]", ")", ":", `\:`, "\n", " ")
	return r.Replace(s)
}

// Fish renders completions for fish (a file in vendor_completions.d).
func Fish(d Doc) []byte {
	var b strings.Builder
	b.WriteString(generated)
	b.WriteString("complete -c dialtrap -f\n")
	var subs []string
	for _, c := range d.subcommandWords() {
		subs = append(subs, c.Name)
		fmt.Fprintf(&b, "complete -c dialtrap -n __fish_use_subcommand -a %s -d %s\n", c.Name, fishQuote(summary(c)))
	}
	fishFlags := func(cond string, c Command) {
		for _, o := range Options(c.Flags) {
			line := "complete -c dialtrap -n " + fishQuote(cond)
			if o.Short != "" {
				line += " -s " + o.Short
			}
			line += " -l " + o.Long
			switch o.Kind {
			case ArgFile, ArgDir:
				line += " -r -F"
			case ArgWord:
				line += " -x"
			}
			b.WriteString(line + " -d " + fishQuote(firstSentence(o.Usage)) + "\n")
		}
	}
	fishFlags("not __fish_seen_subcommand_from "+strings.Join(subs, " "), d.Node)
	for _, c := range d.Subcommands {
		parent, child, nested := strings.Cut(c.Name, " ")
		cond := "__fish_seen_subcommand_from " + parent
		if nested {
			cond += "; and __fish_seen_subcommand_from " + child
		} else if ch := d.children(c.Name); len(ch) > 0 {
			var words []string
			for _, x := range ch {
				_, w, _ := strings.Cut(x.Name, " ")
				words = append(words, w)
				fmt.Fprintf(&b, "complete -c dialtrap -n %s -a %s -d %s\n",
					fishQuote(cond+"; and not __fish_seen_subcommand_from "+w), w, fishQuote(summary(x)))
			}
			cond += "; and not __fish_seen_subcommand_from " + strings.Join(words, " ")
		}
		fishFlags(cond, c)
		if c.Args == ArgFile {
			fmt.Fprintf(&b, "complete -c dialtrap -n %s -F\n", fishQuote(cond))
		}
		if len(c.Words) > 0 {
			fmt.Fprintf(&b, "complete -c dialtrap -n %s -a %s\n", fishQuote(cond), fishQuote(strings.Join(c.Words, " ")))
		}
	}
	return []byte(b.String())
}

func fishQuote(s string) string {
	return "'" + strings.NewReplacer(`\`, `\\`, "'", `\'`).Replace(s) + "'"
}
