package main

import (
	"fmt"
	"io"
	"strings"
	"sync"

	"github.com/dialtrap/dialtrap/internal/clidoc"
	"github.com/dialtrap/dialtrap/internal/config"
)

// collecting, while set, receives each subcommand's flag set in place of parsing arguments:
// the reference, the manual page and the completions are made from the very sets the
// subcommands parse. collectMu keeps two collections apart.
var (
	collecting func(*flags)
	collectMu  sync.Mutex
)

// nested are the subcommands that have subcommands of their own.
var nested = map[string][]string{"block": {"status"}, "bgp": {"status"}}

// fileOperands are the subcommands whose operands are files.
var fileOperands = map[string]bool{"import": true}

// wordOperands are the subcommands whose operand is one of a few words.
var wordOperands = map[string][]string{"completion": {"bash", "zsh", "fish"}}

// exitCodes is what each exit status means; the reference and the manual list it.
var exitCodes = []clidoc.ExitCode{
	{Code: exitOK, Meaning: "success; the node stopped cleanly after SIGINT or SIGTERM, every queued event written"},
	{Code: exitRuntime, Meaning: "the node could not start or failed while running (a port in use, an unreadable certificate, an unwritable database: the message says what to do); a subcommand failed"},
	{Code: exitUsage, Meaning: "usage error: an unknown flag, a bad value in a flag, the environment or the TOML file"},
	{Code: exitOK, Command: "check", Meaning: "the number or address is not known"},
	{Code: 1, Command: "check", Meaning: "the number or address is known-bad"},
	{Code: checkError, Command: "check", Meaning: "the question could not be answered (usage, database or API error): treat as unknown or fail closed, as your dialplan chooses"},
	{Code: exitOK, Command: "health", Meaning: "the node's API answered its health check"},
	{Code: 1, Command: "health", Meaning: "it did not answer, or not as a dialtrap node (the reason is on standard error)"},
	{Code: exitVerify, Command: "migrate", Meaning: "the copy finished but the destination does not hold every event of the source"},
}

const nodeAbout = `A SIP honeypot and VoIP fraud-detection node. It listens for SIP on UDP and TCP (--sip-addr)
and TLS (--sip-tls-addr), records every probe in its store, and optionally in a JSON log, in
syslog and at a webhook; with -a it answers lookups over a REST API, with -p it shares signed
events with peers. Short flags combine: dialtrap -draps.`

var prose = []clidoc.Section{
	{Title: "Sources of options", Text: `Every option of the node has a long name, an environment variable (DIALTRAP_ and the long name in upper case, dashes as underscores) and a key of the TOML file named by -g or DIALTRAP_CONFIG (the long name; an unknown key is an error). Precedence: flag, then environment, then file, then the default.

A boolean environment variable that is set turns its option on whatever the value, except false, no and off. The reference product's variable names (SENTRYPEER_ and the same suffix, and the names listed in the table) are read when the DIALTRAP_ one is unset, with a deprecation warning.

The subcommands read each flag they are not given from DIALTRAP_<NAME> too, and from the node's TOML file (-g) where the node has an option of that name, so a PBX host configured for the node needs no more for dialtrap check.`},
	{Title: "Signals", Text: `SIGINT and SIGTERM stop the listeners, write every queued event to every output and exit 0. SIGHUP reopens the JSON log (for logrotate) and reloads the never-block list.`},
	{Title: "Files", Text: `--data-dir holds node_id (the node's UUID, stable across restarts), node_key (ed25519, mode 0600, with -p), the self-signed sip-tls-cert.pem and sip-tls-key.pem, the default database dialtrap.db, the default JSON log dialtrap_json.log, webhook-spool/ and store-spool/. Paths the operator names are taken as given.`},
}

// commandDoc collects the whole command line.
func commandDoc() clidoc.Doc {
	collectMu.Lock()
	defer collectMu.Unlock()
	var subs []clidoc.Command
	collecting = func(f *flags) {
		subs = append(subs, clidoc.Command{Name: f.name, Usage: f.usage, About: f.about, Flags: f.FlagSet})
	}
	defer func() { collecting = nil }()
	for _, name := range subcommandOrder {
		run := subcommands[name].run
		run(nil, io.Discard, io.Discard)
		for _, child := range nested[name] {
			run([]string{child}, io.Discard, io.Discard)
		}
	}
	for i := range subs {
		c := &subs[i]
		if fileOperands[c.Name] {
			c.Args = clidoc.ArgFile
		}
		c.Words = wordOperands[c.Name]
		// The menus show the short line of dialtrap -h: "check [flags] NUMBER|IP   is it
		// known-bad? ...", after the synopsis column.
		if sub, ok := subcommands[c.Name]; ok {
			if _, text, ok := strings.Cut(sub.synopsis, "  "); ok {
				c.Summary = strings.TrimSpace(text)
			}
		}
	}
	return clidoc.Doc{
		Node:        clidoc.Command{Usage: "[flags]", About: nodeAbout, Flags: config.FlagSet()},
		Subcommands: subs,
		Env: func(long string) (string, []string, bool) {
			return config.EnvName(long), config.LegacyEnvNames(long), config.InFile(long)
		},
		ExitCodes: exitCodes,
		Prose:     prose,
	}
}

// runCompletion prints a shell's completion script.
func runCompletion(args []string, stdout, stderr io.Writer) int {
	f := newFlags("completion", "completion bash|zsh|fish",
		"Prints the shell completion script for bash, zsh or fish. The packages install them;\n"+
			"by hand: dialtrap completion bash > /etc/bash_completion.d/dialtrap", stdout, stderr)
	if code := f.parseOnly(args, exitUsage, false); code >= 0 {
		return code
	}
	if f.NArg() != 1 {
		return f.fail(exitUsage, "name one shell: bash, zsh or fish")
	}
	render := map[string]func(clidoc.Doc) []byte{"bash": clidoc.Bash, "zsh": clidoc.Zsh, "fish": clidoc.Fish}[f.Arg(0)]
	if render == nil {
		return f.fail(exitUsage, "%q: the shells are bash, zsh and fish", f.Arg(0))
	}
	if _, err := stdout.Write(render(commandDoc())); err != nil {
		fmt.Fprintf(stderr, "dialtrap completion: %v\n", err)
		return exitRuntime
	}
	return exitOK
}
