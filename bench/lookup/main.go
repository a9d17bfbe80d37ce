// Command lookup measures the number lookup a PBX makes on every outbound call,
// GET /numbers/{n}, against a dialtrap node whose store holds a million numbers and 200,000
// IPs, next to a bare net/http handler returning a constant body, measured in the same run
// with the same load generator (the ceiling).
//
// For each server it measures the throughput of a closed loop (every connection sends its
// next request as soon as the answer is in), then the latency of an open loop at a fixed rate
// (requests are due on a schedule and latency counts from when each was due, so a stalled
// server cannot hide its queue). Half the requests are hits, half misses. It also reports the
// node's start time with that store and its peak RSS. Only 127.0.0.1 is used.
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/dialtrap/dialtrap/internal/event"
	"github.com/dialtrap/dialtrap/internal/store"
	"github.com/dialtrap/dialtrap/internal/store/sqlite"
	"github.com/dialtrap/dialtrap/internal/testutil"
)

func main() {
	var (
		bin      = flag.String("bin", "./bin/dialtrap", "dialtrap binary")
		dir      = flag.String("dir", filepath.Join(os.TempDir(), "dialtrap-bench-lookup"), "data directory of the seeded store (kept for later runs)")
		numbers  = flag.Int("numbers", 1_000_000, "distinct numbers in the store")
		ips      = flag.Int("ips", 200_000, "distinct IPs in the store")
		rate     = flag.Int("rate", 10_000, "open-loop request rate, requests/s")
		duration = flag.Duration("duration", 10*time.Second, "time per measurement")
		conns    = flag.Int("conns", 64, "keep-alive connections")
		national = flag.Bool("national", false, "ask with ?match=national")
		bare     = flag.String("bare", "", "internal: serve the bare handler on this address")
	)
	flag.Parse()
	if *bare != "" {
		serveBare(*bare)
		return
	}
	if err := run(*bin, *dir, *numbers, *ips, *rate, *duration, *conns, *national); err != nil {
		fmt.Fprintln(os.Stderr, "lookup:", err)
		os.Exit(1)
	}
}

// serveBare is the baseline: net/http with a handler that writes a constant JSON body.
func serveBare(addr string) {
	body := []byte("{\n  \"message\": \"No phone number found\"\n}")
	http.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusNotFound)
		w.Write(body)
	})
	fmt.Fprintln(os.Stderr, http.ListenAndServe(addr, nil))
	os.Exit(1)
}

// number i of the seeded store; misses use another range.
func number(i int) string { return strconv.Itoa(4_600_000_000 + 7*i) }
func miss(i int) string   { return strconv.Itoa(9_100_000_000 + 7*i) }

func seed(dir string, numbers, ips int) error {
	db := filepath.Join(dir, "dialtrap.db")
	ctx := context.Background()
	if st, err := sqlite.OpenReadOnly(ctx, db); err == nil {
		n, err1 := st.Count(ctx, store.CalledNumbers, "")
		m, err2 := st.Count(ctx, store.IPAddresses, "")
		st.Close()
		if err1 == nil && err2 == nil && n == int64(numbers) && m == int64(ips) {
			fmt.Printf("store: reusing %s (%d numbers, %d IPs)\n", db, n, m)
			return nil
		}
	}
	os.RemoveAll(dir)
	st, err := sqlite.Open(ctx, db)
	if err != nil {
		return err
	}
	defer st.Close()
	start := time.Now()
	base := time.Now().Add(-30 * 24 * time.Hour)
	batch := make([]*event.Event, 0, 5000)
	for i := range numbers {
		e := event.New(event.Origin{AppVersion: "bench", NodeID: "bench", Method: event.Passive, Transport: event.UDP},
			base.Add(time.Duration(i)*time.Second), number(i), "INVITE", "friendly-scanner",
			[]byte("INVITE sip:"+number(i)+"@198.51.100.1 SIP/2.0\r\n\r\n"))
		e.SourceIP = fmt.Sprintf("198.%d.%d.%d", 18+(i%ips)>>16, ((i%ips)>>8)&255, (i%ips)&255)
		batch = append(batch, e)
		if len(batch) == cap(batch) || i == numbers-1 {
			if err := st.Write(ctx, batch); err != nil {
				return err
			}
			batch = batch[:0]
		}
	}
	fmt.Printf("store: seeded %d numbers and %d IPs in %s\n", numbers, ips, time.Since(start).Round(time.Second))
	return nil
}

func run(bin, dir string, numbers, ips, rate int, d time.Duration, conns int, national bool) error {
	if err := seed(dir, numbers, ips); err != nil {
		return err
	}
	query := ""
	if national {
		query = "?match=national"
	}
	paths := make([]string, 100_000)
	for i := range paths {
		if i%2 == 0 {
			paths[i] = "/numbers/" + number(rand.IntN(numbers)) + query
		} else {
			paths[i] = "/numbers/" + miss(rand.IntN(numbers)) + query
		}
	}

	self, err := os.Executable()
	if err != nil {
		return err
	}
	bareAddr := freeAddr()
	bareCmd := exec.Command(self, "-bare", bareAddr)
	bareCmd.Stderr = os.Stderr
	if err := bareCmd.Start(); err != nil {
		return err
	}
	defer bareCmd.Process.Kill()
	if _, err := waitReady("http://"+bareAddr+"/", 10*time.Second); err != nil {
		return fmt.Errorf("bare handler: %w", err)
	}

	nodeAddr := freeAddr()
	node := exec.Command(bin, "-R", "-a", "--api-addr", nodeAddr, "--data-dir", dir)
	node.Stderr = os.Stderr
	started := time.Now()
	if err := node.Start(); err != nil {
		return err
	}
	defer node.Process.Kill()
	startup, err := waitReady("http://"+nodeAddr+"/health-check", 60*time.Second)
	if err != nil {
		return fmt.Errorf("node: %w", err)
	}
	_ = started
	rssStart := testutil.ProcStatusKiB(node.Process.Pid, "VmRSS:")

	fmt.Printf("node: ready %s after start with %d numbers / %d IPs, RSS %d MiB\n", startup.Round(time.Millisecond), numbers, ips, rssStart/1024)
	fmt.Printf("load: %d keep-alive connections, %s per step, half hits and half misses%s\n\n", conns, d, map[bool]string{true: ", ?match=national"}[national])

	type result struct {
		name       string
		rps        float64
		p50, p99   time.Duration
		max        time.Duration
		dueP99     time.Duration
		done, errs int64
		achieved   float64
	}
	var results []result
	for _, s := range []struct{ name, base string }{{"bare net/http", "http://" + bareAddr}, {"dialtrap", "http://" + nodeAddr}} {
		rps, errs := closedLoop(s.base, paths, conns, d)
		if errs > 0 {
			return fmt.Errorf("%s: %d failed requests in the closed loop", s.name, errs)
		}
		lat, due, achieved, errs := openLoop(s.base, paths, conns, rate, d)
		results = append(results, result{s.name, rps, pct(lat, 50), pct(lat, 99), pct(lat, 100), pct(due, 99), int64(len(lat)), errs, achieved})
	}
	fmt.Printf("%-14s %11s %11s %9s %9s %9s %12s %7s\n", "server", "max req/s", "open req/s", "p50", "p99", "max", "p99 from due", "errors")
	for _, r := range results {
		fmt.Printf("%-14s %11.0f %11.0f %9s %9s %9s %12s %7d\n", r.name, r.rps, r.achieved, r.p50, r.p99, r.max, r.dueP99, r.errs)
	}
	fmt.Printf("\nthroughput ratio dialtrap / bare: %.2f (goal >= 0.5)\n", results[1].rps/results[0].rps)
	fmt.Printf("dialtrap p99 at %d req/s: %s (goal < 1ms)\n", rate, results[1].p99)
	// The store is read through a memory map: its pages count in RSS but are the kernel's
	// page cache, shared and reclaimable; RssAnon is the node's own memory.
	fmt.Printf("dialtrap peak RSS: %d MiB (of which mapped store file %d MiB, own memory %d MiB)\n",
		testutil.ProcStatusKiB(node.Process.Pid, "VmHWM:")/1024, testutil.ProcStatusKiB(node.Process.Pid, "RssFile:")/1024, testutil.ProcStatusKiB(node.Process.Pid, "RssAnon:")/1024)
	node.Process.Signal(syscall.SIGTERM)
	node.Wait()
	return nil
}

func freeAddr() string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// waitReady polls url until it answers and returns how long that took.
func waitReady(url string, limit time.Duration) (time.Duration, error) {
	start := time.Now()
	for time.Since(start) < limit {
		if resp, err := http.Get(url); err == nil {
			resp.Body.Close()
			return time.Since(start), nil
		}
		time.Sleep(2 * time.Millisecond)
	}
	return 0, errors.New("not answering")
}

// conn is one keep-alive HTTP/1.1 connection with a minimal client: the load generator
// shares the machine with the server, so it must cost far less per request than net/http's
// client does (as wrk does).
type conn struct {
	c    net.Conn
	r    *bufio.Reader
	host string
	buf  []byte
}

func dial(base string) (*conn, error) {
	host := strings.TrimPrefix(base, "http://")
	c, err := net.Dial("tcp", host)
	if err != nil {
		return nil, err
	}
	return &conn{c: c, r: bufio.NewReaderSize(c, 16<<10), host: host}, nil
}

// get sends one request and reads the whole response; the status must be 200 or 404.
func (c *conn) get(path string) error {
	c.buf = append(c.buf[:0], "GET "...)
	c.buf = append(c.buf, path...)
	c.buf = append(c.buf, " HTTP/1.1\r\nHost: "...)
	c.buf = append(c.buf, c.host...)
	c.buf = append(c.buf, "\r\n\r\n"...)
	c.c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.c.Write(c.buf); err != nil {
		return err
	}
	status, err := c.r.ReadSlice('\n')
	if err != nil {
		return err
	}
	if len(status) < 12 || (string(status[9:12]) != "200" && string(status[9:12]) != "404") {
		return fmt.Errorf("status line %q", status)
	}
	length := -1
	for {
		line, err := c.r.ReadSlice('\n')
		if err != nil {
			return err
		}
		if len(line) <= 2 {
			break
		}
		if k, v, ok := strings.Cut(string(line), ":"); ok && strings.EqualFold(k, "Content-Length") {
			length, _ = strconv.Atoi(strings.TrimSpace(v))
		}
	}
	if length < 0 {
		return errors.New("response without Content-Length")
	}
	_, err = c.r.Discard(length)
	return err
}

// closedLoop runs conns workers back to back for d and returns requests/s.
func closedLoop(base string, paths []string, conns int, d time.Duration) (float64, int64) {
	var done, errs atomic.Int64
	stop := time.Now().Add(d)
	var wg sync.WaitGroup
	for w := range conns {
		wg.Go(func() {
			c, err := dial(base)
			if err != nil {
				errs.Add(1)
				return
			}
			defer c.c.Close()
			for i := w; time.Now().Before(stop); i += conns {
				if err := c.get(paths[i%len(paths)]); err != nil {
					errs.Add(1)
					continue
				}
				done.Add(1)
			}
		})
	}
	wg.Wait()
	return float64(done.Load()) / d.Seconds(), errs.Load()
}

// openLoop sends rate requests/s on a fixed schedule for d. It returns each request's
// latency from when it was sent (the server's answer time, as wrk measures it) and from when
// it was due (which adds the generator's own pacing delay: a sleeping Go timer wakes up to a
// few hundred microseconds late, so this is an upper bound).
func openLoop(base string, paths []string, conns, rate int, d time.Duration) (sent, due []time.Duration, achieved float64, errs int64) {
	total := int(float64(rate) * d.Seconds())
	dueCh := make(chan time.Time, total)
	lats := make([][]time.Duration, conns)
	dueLats := make([][]time.Duration, conns)
	var nerr atomic.Int64
	var wg sync.WaitGroup
	for w := range conns {
		wg.Go(func() {
			c, err := dial(base)
			if err != nil {
				nerr.Add(1)
				for range dueCh {
				}
				return
			}
			defer c.c.Close()
			i := w
			for t := range dueCh {
				start := time.Now()
				if err := c.get(paths[i%len(paths)]); err != nil {
					nerr.Add(1)
				} else {
					end := time.Now()
					lats[w] = append(lats[w], end.Sub(start))
					dueLats[w] = append(dueLats[w], end.Sub(t))
				}
				i += conns
			}
		})
	}
	start := time.Now()
	interval := time.Second / time.Duration(rate)
	for i := range total {
		at := start.Add(time.Duration(i) * interval)
		if wait := time.Until(at); wait > 0 {
			time.Sleep(wait)
		}
		dueCh <- at
	}
	close(dueCh)
	wg.Wait()
	elapsed := time.Since(start)
	for w := range conns {
		sent = append(sent, lats[w]...)
		due = append(due, dueLats[w]...)
	}
	slices.Sort(sent)
	slices.Sort(due)
	return sent, due, float64(len(sent)) / elapsed.Seconds(), nerr.Load()
}

func pct(sorted []time.Duration, p int) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := (len(sorted)*p + 99) / 100
	return sorted[min(max(i-1, 0), len(sorted)-1)].Round(time.Microsecond)
}
