package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/dialtrap/dialtrap/internal/bgp"
	"github.com/dialtrap/dialtrap/internal/block"
	"github.com/dialtrap/dialtrap/internal/config"
	"github.com/dialtrap/dialtrap/internal/feed"
	"github.com/dialtrap/dialtrap/internal/fsutil"
	"github.com/dialtrap/dialtrap/internal/node"
)

// bgpStatusFile is what dialtrap bgp writes every few seconds and bgp status reads.
type bgpStatusFile struct {
	PID     int                `json:"pid"`
	Updated time.Time          `json:"updated"`
	Speaker bgp.Status         `json:"speaker"`
	Nodes   []*block.NodeState `json:"nodes"`
}

func bgpStatusPath(dataDir, file string) string {
	if file != "" {
		return file
	}
	return filepath.Join(dataDir, "bgp-status.json")
}

// runBGP is the blackhole speaker as its own process: it follows nodes' /feeds/stream, as
// dialtrap block does, and announces what they block to the routers.
func runBGP(args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 && args[0] == "status" {
		return runBGPStatus(args[1:], stdout, stderr)
	}
	f := newFlags("bgp", "bgp --node URL --bgp-asn ASN --bgp-router-id IP --bgp-neighbor \"ADDRESS as ASN\" [flags]\n       dialtrap bgp status [flags]",
		"Follows the blocklist change stream of one or more nodes and announces every blocked\n"+
			"address to the routers as a /32 or /128 with the BLACKHOLE community 65535:666 (RFC 7999)\n"+
			"and NO_EXPORT; withdraws it when its --bgp-ttl passes or it joins the never-block list\n"+
			"(SIGHUP reloads the list). Stopping the process ends the sessions: the routers then drop\n"+
			"every route it announced.", stdout, stderr)
	var cfg config.Config
	config.AddBGPFlags(f.FlagSet, &cfg)
	nodes := f.StringArray("node", nil, "a node's REST API, e.g. http://127.0.0.1:8082 (repeatable)")
	token := f.String("api-token", "", "bearer token of the nodes (DIALTRAP_API_TOKEN)")
	tokenFiles := f.StringArray("node-token-file", nil, "a file holding the token of the --node in the same position (repeatable; overrides --api-token)")
	neverBlock := f.StringSlice("never-block", nil, "addresses, CIDR prefixes or files of them never announced (repeatable)")
	neverDefaults := f.Bool("never-block-defaults", true, "also never announce loopback, private, link-local, multicast, documentation ranges and this host's addresses")
	dataDir := f.String("data-dir", ".", "directory of the status file")
	statusFile := f.String("status-file", "", "where the speaker's status is written every 5 s (default bgp-status.json in --data-dir)")
	verbose := f.BoolP("verbose", "v", false, "info logs (sessions, syncs)")
	debug := f.BoolP("debug", "d", false, "debug logs")
	if code := f.parse(args, exitUsage); code >= 0 {
		return code
	}
	if f.NArg() != 0 {
		return f.fail(exitUsage, "unexpected argument %q (see dialtrap bgp -h)", f.Arg(0))
	}
	if len(*nodes) == 0 {
		return f.fail(exitUsage, "give at least one --node URL (a node's REST API)")
	}
	if len(cfg.BGPNeighbor) == 0 {
		return f.fail(exitUsage, "give at least one --bgp-neighbor \"ADDRESS as ASN\"")
	}
	if cfg.BGPMaxPrefixes < 1 || cfg.BGPMinCount < 1 || cfg.BGPMaxPerNet6 < 1 || cfg.BGPMaxReceived < 1 || cfg.BGPTTL < 0 {
		return f.fail(exitUsage, "--bgp-max-prefixes, --bgp-max-per-ipv6-net, --bgp-max-received and --bgp-min-count must be at least 1, --bgp-ttl not negative")
	}
	cfgNodes, code := nodeList(f, *nodes, *token, *tokenFiles)
	if code >= 0 {
		return code
	}
	guard, err := feed.NewIPGuard(*neverBlock, *neverDefaults)
	if err != nil {
		return f.fail(exitUsage, "--never-block: %v", err)
	}
	if *neverDefaults {
		if err := guard.AddHostAddrs(); err != nil {
			fmt.Fprintf(stderr, "dialtrap bgp: %v\n", err)
		}
	}
	log := newLogger(stderr, &config.Config{Verbose: *verbose, Debug: *debug})
	speaker, err := node.NewSpeaker(&cfg, guard, log)
	if err != nil {
		return f.fail(exitUsage, "%v", err)
	}
	// No cursors are kept: a new process starts with an empty RIB and fetches every set whole.
	agent, err := block.New(block.Config{Nodes: cfgNodes, Set: speaker, Query: node.BGPQuery(&cfg), Guard: guard,
		Log: log, TTL: cfg.BGPTTL, Name: "bgp"}) // the speaker holds the cap and its waiting list
	if err != nil {
		return f.fail(exitUsage, "%v", err)
	}
	ctx, stop := signalContext()
	defer stop()
	if err := speaker.Start(ctx); err != nil {
		return f.fail(exitRuntime, "%v", err)
	}
	defer speaker.Close()
	path := bgpStatusPath(*dataDir, *statusFile)
	writeStatus := func() {
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		st := bgpStatusFile{PID: os.Getpid(), Updated: time.Now(), Speaker: speaker.Status(sctx), Nodes: agent.Snapshot().Nodes}
		b, _ := json.MarshalIndent(st, "", "  ")
		if err := fsutil.WriteFileAtomic(path, append(b, '\n'), 0o644); err != nil {
			log.Warn("bgp: cannot write the status file", "file", path, "err", err)
		}
	}
	done := make(chan error, 1)
	go func() { done <- agent.Run(ctx) }()
	log.Log(ctx, node.LevelNotice, "dialtrap bgp running", "asn", cfg.BGPASN, "router_id", cfg.BGPRouterID,
		"neighbors", len(cfg.BGPNeighbor), "nodes", len(cfgNodes), "max_prefixes", cfg.BGPMaxPrefixes, "status_file", path)
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	tick := time.NewTicker(5 * time.Second)
	defer tick.Stop()
	writeStatus()
	for {
		select {
		case err := <-done:
			writeStatus()
			if err != nil && ctx.Err() == nil {
				return f.fail(exitRuntime, "%v", err)
			}
			return exitOK
		case <-tick.C:
			writeStatus()
		case <-hup:
			g, err := feed.NewIPGuard(*neverBlock, *neverDefaults)
			if err == nil && *neverDefaults {
				err = g.AddHostAddrs()
			}
			if err != nil {
				log.Error("bgp: reload the never-block list after SIGHUP; the old list stays in force", "err", err)
				continue
			}
			guard.Replace(g)
			if err := speaker.Reguard(); err != nil {
				log.Error("bgp: withdraw what the never-block list now protects", "err", err)
			} else {
				log.Log(ctx, node.LevelNotice, "bgp: never-block list reloaded")
			}
			agent.Resync() // what the list no longer protects is announced again
			writeStatus()
		}
	}
}

// nodeList reads --node, --api-token and --node-token-file (shared by block and bgp); code
// is -1 to go on.
func nodeList(f *flags, nodes []string, token string, tokenFiles []string) ([]block.Node, int) {
	if len(tokenFiles) > 0 && len(tokenFiles) != len(nodes) {
		return nil, f.fail(exitUsage, "--node-token-file given %d times for %d --node: give one per node, in the same order", len(tokenFiles), len(nodes))
	}
	var out []block.Node
	for i, u := range nodes {
		n := block.Node{URL: u, Token: token}
		if len(tokenFiles) > 0 {
			b, err := os.ReadFile(tokenFiles[i])
			if err != nil {
				return nil, f.fail(exitUsage, "--node-token-file: %v", err)
			}
			n.Token = strings.TrimSpace(string(b))
		}
		out = append(out, n)
	}
	return out, -1
}

// runBGPStatus prints the speaker's sessions and counters from its status file.
func runBGPStatus(args []string, stdout, stderr io.Writer) int {
	f := newFlags("bgp status", "bgp status [flags]",
		"Shows the speaker's sessions, what it announces and, for each node it follows, whether it is\n"+
			"connected (from the status file the running speaker writes every 5 s).", stdout, stderr)
	dataDir := f.String("data-dir", ".", "directory of the status file")
	statusFile := f.String("status-file", "", "the status file (default bgp-status.json in --data-dir)")
	asJSON := f.Bool("json", false, "print the status file as it is")
	if code := f.parse(args, exitUsage); code >= 0 {
		return code
	}
	path := bgpStatusPath(*dataDir, *statusFile)
	b, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return f.fail(exitRuntime, "no status file at %s: is dialtrap bgp running with this --data-dir or --status-file? (a node's own speaker shows its status at GET /bgp on its API)", path)
	}
	if err != nil {
		return f.fail(exitRuntime, "%v", err)
	}
	if *asJSON {
		stdout.Write(b)
		return exitOK
	}
	var st bgpStatusFile
	if err := json.Unmarshal(b, &st); err != nil {
		return f.fail(exitRuntime, "status file %s is damaged: %v", path, err)
	}
	now := time.Now()
	running := st.PID > 0 && processAlive(st.PID)
	sp := st.Speaker
	fmt.Fprintf(stdout, "speaker     pid %d (%s), AS %d, router id %s, status written %s ago\n", st.PID,
		map[bool]string{true: "running", false: "not running"}[running], sp.ASN, sp.RouterID, now.Sub(st.Updated).Round(time.Second))
	fmt.Fprintf(stdout, "announced   %d of at most %d (%d IPv4, %d IPv6), next hops %s, communities %s\n", sp.Announced, sp.MaxPrefixes,
		sp.AnnouncedIPv4, sp.AnnouncedIPv6, strings.Join(sp.NextHops, " "), strings.Join(sp.Communities, " "))
	fmt.Fprintf(stdout, "counters    %d announcements, %d expired, %d withdrawn, %d allowlisted, %d refused at the cap, %d never-block\n",
		sp.Announcements, sp.Expired, sp.Withdrawals, sp.Allowlisted, sp.RefusedMax, sp.RefusedGuarded)
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NEIGHBOR\tAS\tSTATE\tSINCE\tUPDATES SENT\tLAST ERROR")
	for _, p := range sp.Peers {
		since := "-"
		if !p.Since.IsZero() {
			since = p.Since.Format(time.RFC3339)
		}
		state := p.State
		if !running {
			state = "down (not running)"
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%d\t%s\n", p.Address, p.ASN, state, since, p.Sent, p.LastError)
	}
	fmt.Fprintln(tw)
	fmt.Fprintln(tw, "NODE\tCONNECTED\tLAST SYNC\tRECEIVED\tAPPLIED\tREFUSED\tLAST ERROR")
	for _, n := range st.Nodes {
		last := "never"
		if !n.LastSync.IsZero() {
			last = n.LastSync.Format(time.RFC3339)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%d\t%s\n", n.URL, yesNo(n.Connected && running), last, byteSize(n.Bytes), n.Applied, n.Refused, n.LastError)
	}
	tw.Flush()
	if !running {
		return exitRuntime // for monitoring: the speaker is not running, whatever the file says
	}
	return exitOK
}
