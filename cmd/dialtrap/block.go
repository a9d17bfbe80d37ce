package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/dialtrap/dialtrap/internal/block"
	"github.com/dialtrap/dialtrap/internal/config"
	"github.com/dialtrap/dialtrap/internal/feed"
	"github.com/dialtrap/dialtrap/internal/firewall"
)

// setFlags name the kernel set the agent keeps (shared by block and block status).
type setFlags struct {
	ipset             bool
	table, set4, set6 string
	noRule            bool
	dataDir           string
	stateFile         string
}

func (sf *setFlags) add(f *flags) {
	f.BoolVar(&sf.ipset, "ipset", false, "keep ipsets (via ipset restore) instead of an nftables table; your iptables or nft rules refer to them")
	f.StringVar(&sf.table, "table", "dialtrap", "nftables table (family inet) the agent owns")
	f.StringVar(&sf.set4, "set4", "", "IPv4 set name (default blocklist4 in nftables, dialtrap4 as an ipset)")
	f.StringVar(&sf.set6, "set6", "", "IPv6 set name (default blocklist6 in nftables, dialtrap6 as an ipset)")
	f.BoolVar(&sf.noRule, "no-rule", false, "nftables: make only the sets, no input chain dropping their sources (your own rules use them)")
	f.StringVar(&sf.dataDir, "data-dir", ".", "directory of the state file")
	f.StringVar(&sf.stateFile, "state-file", "", "the agent's cursors and counters (default block-state.json in --data-dir)")
}

func (sf *setFlags) statePath() string {
	if sf.stateFile != "" {
		return sf.stateFile
	}
	return filepath.Join(sf.dataDir, "block-state.json")
}

func (sf *setFlags) open(dryRun bool, maxElem int, stdout io.Writer) (firewall.Set, error) {
	switch {
	case dryRun:
		return firewall.NewDryRun(stdout), nil
	case sf.ipset:
		set4, set6 := or(sf.set4, "dialtrap4"), or(sf.set6, "dialtrap6")
		return firewall.NewIPSet(firewall.IPSetOptions{Set4: set4, Set6: set6, MaxElem: maxElem})
	default:
		return firewall.NewNFT(firewall.NFTOptions{Table: sf.table, Set4: or(sf.set4, "blocklist4"), Set6: or(sf.set6, "blocklist6"), NoChain: sf.noRule})
	}
}

func or(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// runBlock is the firewall agent: it follows nodes' /feeds/stream and keeps a kernel set in
// step until SIGINT or SIGTERM.
func runBlock(args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 && args[0] == "status" {
		return runBlockStatus(args[1:], stdout, stderr)
	}
	f := newFlags("block", "block --node URL [--node URL ...] [flags]\n       dialtrap block status [flags]",
		"Follows the blocklist change stream of one or more nodes and keeps an nftables set (table\n"+
			"inet dialtrap: sets blocklist4/blocklist6 and an input chain dropping their sources) or\n"+
			"ipsets in step. Elements expire by their kernel timeout (--ttl); the agent never deletes\n"+
			"one, and leaves the set in place when it stops unless --flush-on-exit. It needs\n"+
			"CAP_NET_ADMIN (nftables, ipset) and resumes from the cursors in its state file.", stdout, stderr)
	var sf setFlags
	sf.add(f)
	nodes := f.StringArray("node", nil, "a node's REST API, e.g. http://127.0.0.1:8082 (repeatable)")
	token := f.String("api-token", "", "bearer token of the nodes (DIALTRAP_API_TOKEN)")
	tokenFiles := f.StringArray("node-token-file", nil, "a file holding the token of the --node in the same position (repeatable; overrides --api-token)")
	ttl := f.String("ttl", "24h", "how long an address stays blocked after it was last seen (0: until removed by hand)")
	verified := f.String("verified", "only", "only addresses that proved they are not forged (only), or any")
	source := f.String("source", "trusted", "whose sightings count: trusted (the node's own and its trusted peers'), local, all")
	minCount := f.Int("min-count", 1, "block an address seen at least this often")
	neverBlock := f.StringSlice("never-block", nil, "addresses, CIDR prefixes or files of them never put in the set (repeatable)")
	neverDefaults := f.Bool("never-block-defaults", true, "also never block loopback, private, link-local, multicast, documentation ranges and this host's addresses")
	maxElements := f.Int("max-elements", 1<<20, "most addresses kept in the set; beyond it new ones are refused and counted")
	dryRun := f.Bool("dry-run", false, "print the changes instead of making them (needs no privileges; no state file is read or written)")
	flushOnExit := f.Bool("flush-on-exit", false, "remove the table (or ipsets) when the agent stops")
	verbose := f.BoolP("verbose", "v", false, "info logs (connections, syncs)")
	debug := f.BoolP("debug", "d", false, "debug logs")
	if code := f.parse(args, exitUsage); code >= 0 {
		return code
	}
	if f.NArg() != 0 {
		return f.fail(exitUsage, "unexpected argument %q (see dialtrap block -h)", f.Arg(0))
	}
	if len(*nodes) == 0 {
		return f.fail(exitUsage, "give at least one --node URL (a node's REST API)")
	}
	cfgNodes, code := nodeList(f, *nodes, *token, *tokenFiles)
	if code >= 0 {
		return code
	}
	q := url.Values{"ttl": {*ttl}, "verified": {*verified}, "source": {*source}, "min_count": {fmt.Sprint(*minCount)}}
	// The node checks these too; checking here gives the operator the error at once.
	parsed, err := feed.ParseQuery(0, q, time.Now())
	if err != nil {
		return f.fail(exitUsage, "--ttl, --verified, --source or --min-count: %v", err)
	}
	if *maxElements <= 0 {
		return f.fail(exitUsage, "--max-elements must be at least 1")
	}
	if sf.ipset && parsed.TTL > feed.MaxIPSetTimeout*time.Second {
		return f.fail(exitUsage, "--ttl %s is beyond what ipset takes (%s): give a shorter one", *ttl, feed.MaxIPSetTimeout*time.Second)
	}
	// What the agent selects: a state file of another selection is not resumed from.
	fingerprint := fmt.Sprintf("%s never-block=%q defaults=%t ipset=%t table=%s set4=%s set6=%s",
		q.Encode(), *neverBlock, *neverDefaults, sf.ipset, sf.table, sf.set4, sf.set6)
	guard, err := feed.NewIPGuard(*neverBlock, *neverDefaults)
	if err != nil {
		return f.fail(exitUsage, "--never-block: %v", err)
	}
	if *neverDefaults {
		if err := guard.AddHostAddrs(); err != nil {
			fmt.Fprintf(stderr, "dialtrap block: %v\n", err)
		}
	}
	set, err := sf.open(*dryRun, *maxElements, stdout)
	if err != nil {
		return f.fail(exitRuntime, "%v", err)
	}
	defer set.Close()
	log := newLogger(stderr, &config.Config{Verbose: *verbose, Debug: *debug})
	state := sf.statePath()
	if *dryRun {
		state = "" // a dry run changes nothing, its cursors included: it starts whole each time
	} else if err := os.MkdirAll(filepath.Dir(state), 0o750); err != nil {
		// Without its state file the agent would fetch every set whole at each restart.
		return f.fail(exitRuntime, "state directory: %v (make it, or point --data-dir or --state-file elsewhere)", err)
	}
	agent, err := block.New(block.Config{Nodes: cfgNodes, Set: set, Query: q, Guard: guard,
		StateFile: state, Log: log, TTL: parsed.TTL, MaxElements: *maxElements, Fingerprint: fingerprint})
	if err != nil {
		return f.fail(exitUsage, "%v", err)
	}
	ctx, stop := signalContext()
	defer stop()
	runErr := agent.Run(ctx)
	if *flushOnExit {
		rctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if err := set.Remove(rctx); err != nil {
			runErr = errors.Join(runErr, fmt.Errorf("--flush-on-exit: %w", err))
		}
	}
	if runErr != nil {
		return f.fail(exitRuntime, "%v", runErr)
	}
	return exitOK
}

// runBlockStatus prints the set's size and, per node, the last sync and the lag.
func runBlockStatus(args []string, stdout, stderr io.Writer) int {
	f := newFlags("block status", "block status [flags]",
		"Shows the agent's set size and, for each node it follows, whether it is connected, when it\n"+
			"last synced and how far behind it is (from the state file).", stdout, stderr)
	var sf setFlags
	sf.add(f)
	asJSON := f.Bool("json", false, "print the state file as it is")
	if code := f.parse(args, exitUsage); code >= 0 {
		return code
	}
	st, err := block.ReadState(sf.statePath())
	if errors.Is(err, os.ErrNotExist) {
		return f.fail(exitRuntime, "no state file at %s: is the agent running with this --data-dir or --state-file?", sf.statePath())
	}
	if err != nil {
		return f.fail(exitRuntime, "%v", err)
	}
	if *asJSON {
		b, _ := os.ReadFile(sf.statePath())
		stdout.Write(b)
		return exitOK
	}
	now := time.Now()
	running := st.PID > 0 && processAlive(st.PID)
	fmt.Fprintf(stdout, "agent       pid %d (%s), state written %s ago\n", st.PID, map[bool]string{true: "running", false: "not running"}[running],
		now.Sub(st.Updated).Round(time.Second))
	if set, err := sf.open(false, 0, stdout); err != nil {
		fmt.Fprintf(stdout, "set         unknown: %v\n", err)
	} else {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		v4, v6, err := set.Len(ctx)
		cancel()
		set.Close()
		if err != nil {
			fmt.Fprintf(stdout, "set         unknown: %v\n", err)
		} else {
			fmt.Fprintf(stdout, "set         %d addresses (%d IPv4, %d IPv6)\n", v4+v6, v4, v6)
		}
	}
	if st.Full > 0 || st.Reloads > 0 {
		fmt.Fprintf(stdout, "refused     %d new addresses with the set at --max-elements; sets made again after a reload %d times\n", st.Full, st.Reloads)
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NODE\tCONNECTED\tLAST SYNC\tLAG\tRECEIVED\tAPPLIED\tREFUSED\tFULL SYNCS\tRECONNECTS\tLAST ERROR")
	for _, n := range st.Nodes {
		last, lag := "never", "-"
		if !n.LastSync.IsZero() {
			last = n.LastSync.Format(time.RFC3339)
			lag = now.Sub(n.LastSync).Round(time.Second).String()
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%d\t%d\t%d\t%s\n", n.URL, yesNo(n.Connected && running), last, lag,
			byteSize(n.Bytes), n.Applied, n.Refused, n.FullSyncs, n.Reconnects, n.LastError)
	}
	tw.Flush()
	return exitOK
}

func processAlive(pid int) bool {
	p, err := os.FindProcess(pid)
	return err == nil && p.Signal(syscall.Signal(0)) == nil
}

func byteSize(n int64) string {
	switch {
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}
