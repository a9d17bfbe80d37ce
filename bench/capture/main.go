// Command capture measures how fast a dialtrap node captures SIP over UDP without loss, next
// to a bare Go UDP reader measured in the same run on the same machine (the ceiling).
//
// For each rate it sends probes from several loopback source addresses for a fixed time,
// first to the bare reader, then to a fresh node (SQLite store and JSON log on), and counts
// what arrived: the reader's count; the node's counted probes (the statistics, which add each
// folded event's repeat_count), stored rows, JSON lines and the probes they stand for, and the
// database's bytes per million probes. All traffic stays on 127.0.0.0/8.
package main

import (
	"bufio"
	"bytes"
	"context"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/dialtrap/dialtrap/internal/store"
	"github.com/dialtrap/dialtrap/internal/store/sqlite"
	"github.com/dialtrap/dialtrap/internal/testutil"
)

func main() {
	var (
		bin      = flag.String("bin", "./bin/dialtrap", "dialtrap binary")
		rates    = flag.String("rates", "10000,25000,50000,75000,100000,150000", "offered rates, datagrams/s")
		duration = flag.Duration("duration", 5*time.Second, "sending time per step")
		sources  = flag.Int("sources", 4, "source addresses (127.0.0.2 ...), like that many scanners")
		reader   = flag.Int("reader", 0, "internal: run as the bare reader on this port")
		profile  = flag.String("node-profile", "", "write the node's CPU profile of the last step here")
		compare  = flag.Bool("compare-enrich", false, "also run each step on a node with --enrich=false, and compare")
		numbers  = flag.Int("numbers", 1000, "distinct numbers each source cycles through (1: every source repeats one probe, a flood to fold)")
		fold     = flag.String("fold-window", "", "the node's --fold-window (default: the node's default)")
		noFold   = flag.Bool("compare-fold", false, "also run each step on a node with --fold-window 0, and compare disk bytes")
		extra    = flag.String("node-args", "", "more flags for the node, space-separated (e.g. \"--sip-read-buffer 33554432\")")
	)
	flag.Parse()
	if *reader != 0 {
		testutil.ServeBareUDP(*reader)
		return
	}
	nodeProfile, compareEnrich, distinctNumbers, compareFold = *profile, *compare, *numbers, *noFold
	if *fold != "" {
		nodeArgs = append(nodeArgs, "--fold-window", *fold)
	}
	nodeArgs = append(nodeArgs, strings.Fields(*extra)...)
	if err := bench(*bin, *rates, *duration, *sources); err != nil {
		fmt.Fprintln(os.Stderr, "capture:", err)
		os.Exit(1)
	}
}

type result struct {
	rate int
	sent int64
	bare int64
	nodeResult
	rssKiB int64
	// plain is what a node without enrichment (--enrich=false) stored, with -compare-enrich.
	plain, plainSent int64
}

var (
	nodeProfile     string
	compareEnrich   bool
	compareFold     bool
	distinctNumbers int
	nodeArgs        []string
)

// nodeResult is what a node made of the probes it was sent.
type nodeResult struct {
	counted  int64 // probes in the statistics (folded events add their repeat_count)
	stored   int64 // rows
	jsonLine int64 // JSON log lines
	jsonSum  int64 // probes the JSON lines stand for
	dbBytes  int64 // database and WAL on disk after the run
}

// perMillion is the database's bytes per million probes sent.
func (r nodeResult) perMillion(sent int64) float64 {
	if sent == 0 {
		return 0
	}
	return float64(r.dbBytes) * 1e6 / float64(sent)
}

func bench(bin, rateList string, d time.Duration, sources int) error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	var results []result
	fmt.Printf("capture benchmark: %d sources, %d distinct numbers each, %v per step, node flags %v, GOMAXPROCS of the node = all %d cores\n\n",
		sources, distinctNumbers, d, nodeArgs, testutil.CPUs())
	fmt.Printf("%9s %9s | %9s %7s | %9s %7s %9s %9s | %10s | %8s\n", "offered/s", "sent", "bare got", "loss", "counted", "loss", "rows", "json", "DB B/Mprobe", "node RSS")
	for _, f := range strings.Split(rateList, ",") {
		rate, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil {
			return fmt.Errorf("rate %q: %w", f, err)
		}
		r := result{rate: rate}
		if r.bare, r.sent, err = runBare(self, rate, d, sources); err != nil {
			return err
		}
		var sent int64
		if r.nodeResult, sent, r.rssKiB, err = runNode(bin, rate, d, sources, nodeArgs...); err != nil {
			return err
		}
		if compareEnrich {
			var plain nodeResult
			if plain, r.plainSent, _, err = runNode(bin, rate, d, sources, append(nodeArgs, "--enrich=false")...); err != nil {
				return err
			}
			r.plain = plain.counted
			fmt.Printf("%9s without enrichment: counted %d of %d (%.2f%% loss)\n", "", r.plain, r.plainSent, loss(r.plainSent, r.plain))
		}
		if compareFold {
			unfolded, usent, _, err := runNode(bin, rate, d, sources, append(nodeArgs, "--fold-window", "0")...)
			if err != nil {
				return err
			}
			fmt.Printf("%9s without folding: counted %d of %d (%.2f%% loss), %d rows, %.0f DB bytes per million probes (folded: %.0f = %.4fx)\n", "",
				unfolded.counted, usent, loss(usent, unfolded.counted), unfolded.stored, unfolded.perMillion(usent),
				r.perMillion(sent), r.perMillion(sent)/max(1, unfolded.perMillion(usent)))
		}
		// Both runs offer the same rate; keep each step's own sent count for its loss.
		fmt.Printf("%9d %9d | %9d %6.2f%% | %9d %6.2f%% %9d %9d | %10.0f | %5d MiB\n", rate, sent,
			r.bare, loss(r.sent, r.bare), r.counted, loss(sent, r.counted), r.stored, r.jsonLine, r.perMillion(sent), r.rssKiB/1024)
		r.sent = sent
		results = append(results, r)
	}
	bestBare, bestNode, bestPlain := 0, 0, 0
	for _, r := range results {
		if r.plain == r.plainSent && r.plainSent > 0 && r.rate > bestPlain {
			bestPlain = r.rate
		}
		if r.bare >= r.sent-r.sent/10000 && r.rate > bestBare { // bare: under 0.01% loss
			bestBare = r.rate
		}
		if r.counted == r.sent && r.jsonSum == r.sent && r.rate > bestNode {
			bestNode = r.rate
		}
	}
	fmt.Printf("\nhighest rate with every probe counted: bare reader %d/s, dialtrap (SQLite + JSON log) %d/s", bestBare, bestNode)
	if bestBare > 0 {
		fmt.Printf(" = %.2f of the bare reader", float64(bestNode)/float64(bestBare))
	}
	fmt.Println()
	if compareEnrich && bestPlain > 0 {
		fmt.Printf("with enrichment (tool, payloads) %d/s, without %d/s = %.2fx\n", bestNode, bestPlain, float64(bestNode)/float64(bestPlain))
	}
	return nil
}

func loss(sent, got int64) float64 {
	if sent == 0 {
		return 0
	}
	return 100 * float64(sent-got) / float64(sent)
}

// runBare starts this program as a bare reader, sends to it, and returns what it counted.
func runBare(self string, rate int, d time.Duration, sources int) (got, sent int64, err error) {
	port, err := testutil.PickPort("127.0.0.1")
	if err != nil {
		return 0, 0, err
	}
	cmd := exec.Command(self, "-reader", strconv.Itoa(port))
	out, err := cmd.StdoutPipe()
	if err != nil {
		return 0, 0, err
	}
	if err := cmd.Start(); err != nil {
		return 0, 0, err
	}
	br := bufio.NewReader(out)
	if _, err := br.ReadString('\n'); err != nil { // "ready"
		return 0, 0, fmt.Errorf("bare reader did not start: %w", err)
	}
	sent, err = send(port, rate, d, sources)
	if err != nil {
		return 0, 0, err
	}
	time.Sleep(500 * time.Millisecond)
	_ = cmd.Process.Signal(syscall.SIGTERM)
	line, _ := br.ReadString('\n')
	_ = cmd.Wait()
	got, err = strconv.ParseInt(strings.TrimSpace(line), 10, 64)
	return got, sent, err
}

// runNode starts a fresh node, sends to it, stops it with SIGTERM (which flushes) and counts
// what it kept.
func runNode(bin string, rate int, d time.Duration, sources int, extra ...string) (r nodeResult, sent, rssKiB int64, err error) {
	dir, err := os.MkdirTemp("", "dialtrap-bench-")
	if err != nil {
		return
	}
	defer os.RemoveAll(dir)
	port, err := testutil.PickPort("127.0.0.1")
	if err != nil {
		return
	}
	args := []string{"-v", "-j", "--data-dir", dir, "--sip-addr", fmt.Sprintf(":%d", port), "--sip-tls=false"}
	if nodeProfile != "" {
		args = append(args, "--cpu-profile", nodeProfile)
	}
	args = append(args, extra...)
	cmd := exec.Command(bin, args...)
	if err = testutil.StartNode(cmd, 15*time.Second); err != nil {
		return
	}
	if sent, err = send(port, rate, d, sources); err != nil {
		cmd.Process.Kill()
		return
	}
	time.Sleep(500 * time.Millisecond)
	rssKiB = testutil.ProcStatusKiB(cmd.Process.Pid, "VmHWM:")
	_ = cmd.Process.Signal(syscall.SIGTERM)
	if err = cmd.Wait(); err != nil {
		return r, 0, 0, fmt.Errorf("node exit: %w", err)
	}
	db := filepath.Join(dir, "dialtrap.db")
	for _, f := range []string{db, db + "-wal"} {
		if st, err := os.Stat(f); err == nil {
			r.dbBytes += st.Size()
		}
	}
	st, err := sqlite.Open(context.Background(), db)
	if err != nil {
		return
	}
	defer st.Close()
	if r.stored, err = st.CountEvents(context.Background()); err != nil {
		return
	}
	methods, _, err := st.Top(context.Background(), store.SIPMethods, "", 0)
	if err != nil {
		return
	}
	for _, m := range methods {
		r.counted += m.Count
	}
	r.jsonLine, r.jsonSum, err = countLines(filepath.Join(dir, "dialtrap_json.log"))
	return r, sent, rssKiB, err
}

// countLines counts the JSON log's lines and the probes they stand for (a folded event's
// repeat_count).
func countLines(path string) (lines, probes int64, err error) {
	f, err := os.Open(path)
	if err != nil {
		return 0, 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	key := []byte(`"repeat_count":`)
	for sc.Scan() {
		lines++
		line := sc.Bytes()
		k := bytes.LastIndex(line, key)
		if k < 0 {
			probes++
			continue
		}
		v := line[k+len(key):]
		end := bytes.IndexAny(v, ",}")
		if end < 0 {
			return lines, probes, fmt.Errorf("malformed line %d", lines)
		}
		n, err := strconv.ParseInt(string(v[:end]), 10, 64)
		if err != nil {
			return lines, probes, fmt.Errorf("line %d: %w", lines, err)
		}
		probes += max(1, n)
	}
	return lines, probes, sc.Err()
}

// send offers rate datagrams/s for d from sources loopback addresses. Each source cycles
// through distinctNumbers numbers, as a prefix-guessing scan does (1: a flood of one probe).
func send(port, rate int, d time.Duration, sources int) (int64, error) {
	msgs := make([][]byte, distinctNumbers)
	for i := range msgs {
		num := fmt.Sprintf("900%d46500729%03d", i%10, i)
		msgs[i] = []byte("INVITE sip:" + num + "@127.0.0.1 SIP/2.0\r\n" +
			"Via: SIP/2.0/UDP 127.0.0.2:5070;branch=z9hG4bK-" + strconv.Itoa(i) + ";rport\r\n" +
			"Max-Forwards: 70\r\nTo: <sip:" + num + "@127.0.0.1>\r\nFrom: \"100\" <sip:100@127.0.0.1>;tag=a1b2\r\n" +
			"User-Agent: friendly-scanner\r\nCall-ID: " + strconv.Itoa(i) + "\r\nContact: sip:100@127.0.0.2:5070\r\n" +
			"CSeq: 1 INVITE\r\nAccept: application/sdp\r\nContent-Length: 0\r\n\r\n")
	}
	dst := netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, 1}), uint16(port))
	return testutil.Flood(context.Background(), dst, rate, d, sources, func(i int64) []byte {
		return msgs[(i/int64(sources))%int64(len(msgs))]
	})
}
