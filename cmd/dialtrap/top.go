package main

import (
	"context"
	"fmt"
	"io"
	"math"
	"net/url"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"
)

// runTop shows a running node's attack picture: probes per minute, tools, origins, prefixes,
// targets and campaigns. On a terminal it redraws every --interval until interrupted;
// otherwise (a pipe, a file, cron) it prints one plain snapshot.
func runTop(args []string, stdout, stderr io.Writer) int {
	f := newFlags("top", "top [flags]", "Shows a running node's attacks live: probes a minute, tools, countries, prefixes, targets, campaigns.", stdout, stderr)
	var af apiFlags
	af.add(f, "the node's REST API (default: http:// + --api-addr)", true)
	interval := f.Duration("interval", 2*time.Second, "redraw this often on a terminal")
	since := f.String("since", "24h", "count events from this time on (24h, 2026-11-30, RFC 3339)")
	rows := f.Int("rows", 5, "rows a table")
	once := f.Bool("once", false, "print one snapshot and exit, even on a terminal")
	if code := f.parse(args, exitUsage); code >= 0 {
		return code
	}
	if f.NArg() != 0 {
		return f.fail(exitUsage, "unexpected argument %q (see dialtrap top -h)", f.Arg(0))
	}
	if *interval < 100*time.Millisecond || *rows < 1 || *rows > 100 {
		return f.fail(exitUsage, "--interval must be at least 100ms and --rows from 1 to 100")
	}
	c := af.client()
	if err := c.CheckURL(); err != nil {
		return f.fail(exitUsage, "%v", err)
	}
	live := !*once && isTerminal(stdout)
	if !live {
		ctx, cancel := context.WithTimeout(context.Background(), af.timeout)
		defer cancel()
		snap, err := takeSnapshot(ctx, c, *since, *rows)
		if err != nil {
			return f.fail(exitRuntime, "%v", err)
		}
		snap.print(stdout, time.Now())
		return exitOK
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, os.Interrupt, syscall.SIGTERM)
	defer signal.Stop(sig)
	tick := time.NewTicker(*interval)
	defer tick.Stop()
	for {
		ctx, cancel := context.WithTimeout(context.Background(), af.timeout)
		snap, err := takeSnapshot(ctx, c, *since, *rows)
		cancel()
		// Home and clear: the table is redrawn in place.
		fmt.Fprint(stdout, "\x1b[H\x1b[2J")
		if err != nil {
			fmt.Fprintf(stdout, "dialtrap top: %v\n(retrying every %v; Ctrl-C quits)\n", err, *interval)
		} else {
			snap.print(stdout, time.Now())
			fmt.Fprintf(stdout, "\nrefreshed every %v; Ctrl-C quits\n", *interval)
		}
		select {
		case <-sig:
			return exitOK
		case <-tick.C:
		}
	}
}

// isTerminal reports whether w is a character device (a terminal), not a pipe or a file.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

type valueCount struct {
	Value string
	Count string
}

// snapshot is one view of the node, read from its statistics routes.
type snapshot struct {
	since    string
	events   int64
	ips      int64
	numbers  int64
	timeline []int64
	tools    [][3]string // tool, count, spoofed
	origins  []valueCount
	prefixes []valueCount
	targets  [][5]string // target, country, type, count, fresh
	camps    [][5]string // source, country, tool, count, last seen
}

func takeSnapshot(ctx context.Context, c nodeAPI, since string, rows int) (snapshot, error) {
	q := "?since=" + url.QueryEscape(since) + fmt.Sprintf("&limit=%d", rows)
	var s snapshot
	var stats struct {
		Since   string `json:"since"`
		Events  int64  `json:"events_total"`
		IPs     int64  `json:"ip_addresses_total"`
		Numbers int64  `json:"called_numbers_total"`
	}
	if err := c.JSON(ctx, "/stats"+q, &stats); err != nil {
		return s, err
	}
	s.since, s.events, s.ips, s.numbers = stats.Since, stats.Events, stats.IPs, stats.Numbers
	var tl struct {
		Timeline []struct {
			Count string `json:"seen_count"`
		} `json:"timeline"`
	}
	if err := c.JSON(ctx, "/stats/timeline?step=1m&since=30m", &tl); err != nil {
		return s, err
	}
	for _, b := range tl.Timeline {
		var n int64
		fmt.Sscan(b.Count, &n)
		s.timeline = append(s.timeline, n)
	}
	var tools struct {
		Tools []struct {
			Tool    string `json:"tool"`
			Count   string `json:"seen_count"`
			Spoofed string `json:"ua_spoofed_count"`
		} `json:"tools"`
	}
	if err := c.JSON(ctx, "/stats/tools"+q, &tools); err != nil {
		return s, err
	}
	for _, t := range tools.Tools {
		s.tools = append(s.tools, [3]string{t.Tool, t.Count, t.Spoofed})
	}
	var err error
	if s.origins, err = topValues(ctx, c, "/stats/countries"+q, "countries", "country"); err != nil {
		return s, err
	}
	if s.prefixes, err = topValues(ctx, c, "/stats/prefixes"+q, "prefixes", "prefix"); err != nil {
		return s, err
	}
	var targets struct {
		Targets []struct {
			Target  string `json:"target"`
			Country string `json:"country"`
			Type    string `json:"type"`
			Count   string `json:"seen_count"`
			Fresh   bool   `json:"fresh"`
		} `json:"targets"`
	}
	if err := c.JSON(ctx, "/stats/targets"+q, &targets); err != nil {
		return s, err
	}
	for _, t := range targets.Targets {
		fresh := ""
		if t.Fresh {
			fresh = "fresh"
		}
		s.targets = append(s.targets, [5]string{t.Target, t.Country, t.Type, t.Count, fresh})
	}
	var camps struct {
		Campaigns []struct {
			Source   string `json:"source_ip"`
			Country  string `json:"country"`
			Tool     string `json:"tool"`
			Count    string `json:"seen_count"`
			LastSeen string `json:"last_seen"`
		} `json:"campaigns"`
	}
	if err := c.JSON(ctx, "/campaigns"+q, &camps); err != nil {
		return s, err
	}
	for _, k := range camps.Campaigns {
		s.camps = append(s.camps, [5]string{k.Source, k.Country, k.Tool, k.Count, shortTime(k.LastSeen)})
	}
	return s, nil
}

// topValues reads a counted dimension's list, whose items are {key: value, seen_count: n}.
func topValues(ctx context.Context, c nodeAPI, path, list, key string) ([]valueCount, error) {
	var doc map[string]any
	if err := c.JSON(ctx, path, &doc); err != nil {
		return nil, err
	}
	items, _ := doc[list].([]any)
	var out []valueCount
	for _, it := range items {
		m, _ := it.(map[string]any)
		v, _ := m[key].(string)
		n, _ := m["seen_count"].(string)
		out = append(out, valueCount{v, n})
	}
	return out, nil
}

// shortTime cuts an event_timestamp to the second.
func shortTime(ts string) string {
	if len(ts) >= 19 {
		return ts[:19]
	}
	return ts
}

// sparkline draws counts as a row of block characters, the highest full.
func sparkline(counts []int64) string {
	bars := []rune(" ▁▂▃▄▅▆▇█")
	var top int64
	for _, n := range counts {
		top = max(top, n)
	}
	var b strings.Builder
	for _, n := range counts {
		i := 0
		if top > 0 && n > 0 { // a negative count from a broken or hostile API draws as none
			i = min(len(bars)-1, int(math.Ceil(float64(n)/float64(top)*float64(len(bars)-1))))
		}
		b.WriteRune(bars[i])
	}
	return b.String()
}

func (s snapshot) print(w io.Writer, now time.Time) {
	since := s.since
	if since == "" {
		since = "the start"
	}
	fmt.Fprintf(w, "dialtrap top  %s UTC  since %s\n", now.UTC().Format("2006-01-02 15:04:05"), printable(shortTime(since), 30))
	fmt.Fprintf(w, "events %d   sources %d   numbers %d\n", s.events, s.ips, s.numbers)
	var last int64
	if len(s.timeline) > 1 {
		last = s.timeline[len(s.timeline)-2] // the last whole minute
	}
	fmt.Fprintf(w, "probes/min (30 min) %s  last minute %d\n\n", sparkline(s.timeline), last)

	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "TOOL\tPROBES\tUA SPOOFED\t\tCOUNTRY\tPROBES\t\tPREFIX\tPROBES")
	for i := range max(len(s.tools), len(s.origins), len(s.prefixes)) {
		var t [3]string
		var o, p valueCount
		if i < len(s.tools) {
			t = s.tools[i]
		}
		if i < len(s.origins) {
			o = s.origins[i]
		}
		if i < len(s.prefixes) {
			p = s.prefixes[i]
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t\t%s\t%s\t\t%s\t%s\n", printable(t[0], 20), printable(t[1], 20), printable(t[2], 20),
			printable(o.Value, 20), printable(o.Count, 20), printable(p.Value, 20), printable(p.Count, 20))
	}
	tw.Flush()
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "TARGET\tCOUNTRY\tTYPE\tCALLS\t")
	for _, t := range s.targets {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", printable(t[0], 40), printable(t[1], 20), printable(t[2], 20), printable(t[3], 20), t[4])
	}
	tw.Flush()
	fmt.Fprintln(w)
	tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "CAMPAIGN SOURCE\tCOUNTRY\tTOOL\tPROBES\tLAST SEEN")
	for _, k := range s.camps {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", printable(k[0], 40), printable(k[1], 20), printable(k[2], 20), printable(k[3], 20), printable(k[4], 20))
	}
	tw.Flush()
}

// printable cuts s to n runes and replaces control characters: values come from attackers
// (and from whatever answers at --api-url), and a terminal must not be steered by escape
// sequences in them. Every value top prints goes through it.
func printable(s string, n int) string {
	var b strings.Builder
	for i, r := range []rune(s) {
		if i == n {
			b.WriteString("…")
			break
		}
		if r < 0x20 || r == 0x7f || (r >= 0x80 && r < 0xa0) {
			r = '?'
		}
		b.WriteRune(r)
	}
	return b.String()
}
