// Command policy measures the SIP policy agent: how many call decisions a second it makes and
// how fast, with SIPp as the PBX, against a bare UDP responder measured in the same run with
// the same load (the ceiling: it answers every INVITE with a 302 built by byte copies, and
// looks nothing up).
//
// The store holds -numbers known-bad numbers and -ips known-bad IPs (seeded once into -dir).
// SIPp sends INVITEs for numbers from an injection file: most clean, -bad-numbers percent
// known-bad, -bad-ips percent from a known-bad caller (X-Dialtrap-Caller), and ACKs each
// answer. Each server gets a step at -rate (latency: SIPp's response times, p50/p99/max, and
// the agent's own decision time) and a step at -max-rate (throughput: what it sustains when
// SIPp offers more than it can). CPU time per call of the server is read from getrusage: on a
// small machine SIPp takes a core, so CPU per call is the fairest measure of capacity. Only
// 127.0.0.1 is used.
package main

import (
	"bufio"
	"bytes"
	"context"
	_ "embed"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/dialtrap/dialtrap/internal/event"
	"github.com/dialtrap/dialtrap/internal/policy"
	"github.com/dialtrap/dialtrap/internal/store"
	"github.com/dialtrap/dialtrap/internal/store/sqlite"
	"github.com/dialtrap/dialtrap/internal/testutil"
)

//go:embed uac.xml
var scenario []byte

func main() {
	var (
		dir        = flag.String("dir", filepath.Join(os.TempDir(), "dialtrap-bench-policy"), "data directory of the seeded store (kept for later runs)")
		numbers    = flag.Int("numbers", 100_000, "known-bad numbers in the store")
		ips        = flag.Int("ips", 100_000, "known-bad IPs in the store")
		rate       = flag.Int("rate", 10_000, "INVITEs a second of the latency step")
		maxRate    = flag.Int("max-rate", 60_000, "INVITEs a second offered in the throughput step")
		duration   = flag.Duration("duration", 5*time.Second, "length of each step")
		badNumbers = flag.Float64("bad-numbers", 3, "percent of INVITEs to a known-bad number")
		badIPs     = flag.Float64("bad-ips", 2, "percent of INVITEs from a known-bad caller")
		modes      = flag.String("modes", "bare,exact,national", "servers to measure: bare, exact (agent, exact number match), national (agent, national match)")
	)
	flag.Parse()
	if err := run(*dir, *numbers, *ips, *rate, *maxRate, *duration, *badNumbers, *badIPs, strings.Split(*modes, ",")); err != nil {
		fmt.Fprintln(os.Stderr, "bench/policy:", err)
		os.Exit(1)
	}
}

// Keys of the seeded store, and of calls that are not in it.
func badNumber(i int) string   { return "00" + strconv.Itoa(4_600_000_000+7*i) }
func cleanNumber(i int) string { return "00" + strconv.Itoa(9_100_000_000+7*i) }
func badIP(i int) string       { return fmt.Sprintf("198.%d.%d.%d", 18+(i>>16), (i>>8)&255, i&255) }
func cleanIP(i int) string     { return fmt.Sprintf("100.%d.%d.%d", 64+(i>>16)&63, (i>>8)&255, i&255) }

func seed(ctx context.Context, dir string, numbers, ips int) (*sqlite.Store, error) {
	db := filepath.Join(dir, "dialtrap.db")
	if st, err := sqlite.Open(ctx, db); err == nil {
		n, err1 := st.Count(ctx, store.CalledNumbers, "")
		m, err2 := st.Count(ctx, store.IPAddresses, "")
		if err1 == nil && err2 == nil && n == int64(numbers) && m == int64(ips) {
			fmt.Printf("store: reusing %s (%d numbers, %d IPs)\n", db, n, m)
			return st, nil
		}
		st.Close()
	}
	if err := os.RemoveAll(dir); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	st, err := sqlite.Open(ctx, db)
	if err != nil {
		return nil, err
	}
	start := time.Now()
	base := time.Now().Add(-30 * 24 * time.Hour)
	batch := make([]*event.Event, 0, 5000)
	for i := range max(numbers, ips) {
		src := netip.MustParseAddrPort(badIP(i%ips) + ":5060")
		n := badNumber(i % numbers)
		e := event.New(event.Origin{AppVersion: "bench", NodeID: "bench", Method: event.Passive, Transport: event.UDP, Source: src},
			base.Add(time.Duration(i)*time.Second), n, "INVITE", "friendly-scanner", []byte("INVITE sip:"+n+"@198.51.100.1 SIP/2.0\r\n\r\n"))
		batch = append(batch, e)
		if len(batch) == cap(batch) || i == max(numbers, ips)-1 {
			if err := st.Write(ctx, batch); err != nil {
				st.Close()
				return nil, err
			}
			batch = batch[:0]
		}
	}
	fmt.Printf("store: seeded %d numbers and %d IPs in %s\n", numbers, ips, time.Since(start).Round(time.Second))
	return st, nil
}

// writeCalls writes SIPp's injection file: number;caller per call.
func writeCalls(path string, n int, numbers, ips int, badNumbers, badIPs float64) error {
	var b bytes.Buffer
	b.WriteString("RANDOM\n")
	r := rand.New(rand.NewPCG(1, 2))
	for i := range n {
		num, ip := cleanNumber(i), cleanIP(i)
		switch p := r.Float64() * 100; {
		case p < badNumbers:
			num = badNumber(r.IntN(numbers))
		case p < badNumbers+badIPs:
			ip = badIP(r.IntN(ips))
		}
		fmt.Fprintf(&b, "%s;%s\n", num, ip)
	}
	return os.WriteFile(path, b.Bytes(), 0o644)
}

type server interface {
	addr() string
	close()
	status() *policy.Status // nil for the bare responder
}

type agentServer struct{ a *policy.Agent }

func (s agentServer) addr() string { return s.a.UDPAddr().String() }
func (s agentServer) close()       { _ = s.a.Close(context.Background()) }
func (s agentServer) status() *policy.Status {
	st := s.a.Status()
	return &st
}

// bareServer is the baseline: read a datagram, answer 302 with the request's Via, From, To,
// Call-ID and CSeq copied and a Contact of its Request-URI, by byte operations only.
type bareServer struct {
	conn *net.UDPConn
	wg   sync.WaitGroup
}

func startBare() (*bareServer, error) {
	c, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return nil, err
	}
	_ = c.SetReadBuffer(8 << 20)
	s := &bareServer{conn: c}
	for range max(4, 2*runtime.GOMAXPROCS(0)) {
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			buf := make([]byte, 65536)
			out := make([]byte, 0, 2048)
			for {
				n, src, err := c.ReadFromUDPAddrPort(buf)
				if err != nil {
					return
				}
				if reply := bare302(buf[:n], out[:0]); reply != nil {
					_, _ = c.WriteToUDPAddrPort(reply, src)
				}
			}
		}()
	}
	return s, nil
}

func (s *bareServer) addr() string           { return s.conn.LocalAddr().String() }
func (s *bareServer) close()                 { s.conn.Close(); s.wg.Wait() }
func (s *bareServer) status() *policy.Status { return nil }

func bare302(req, out []byte) []byte {
	if bytes.HasPrefix(req, []byte("ACK ")) {
		return nil
	}
	line, rest, ok := bytes.Cut(req, []byte("\r\n"))
	if !ok {
		return nil
	}
	f := bytes.Fields(line)
	if len(f) != 3 {
		return nil
	}
	out = append(out, "SIP/2.0 302 Moved Temporarily\r\n"...)
	for len(rest) > 0 {
		l, r, _ := bytes.Cut(rest, []byte("\r\n"))
		rest = r
		if len(l) == 0 {
			break
		}
		for _, h := range []string{"Via:", "From:", "To:", "Call-ID:", "CSeq:"} {
			if len(l) > len(h) && bytes.EqualFold(l[:len(h)], []byte(h)) {
				out = append(out, l...)
				if h == "To:" {
					out = append(out, ";tag=bare"...)
				}
				out = append(out, "\r\n"...)
			}
		}
	}
	out = append(out, "Contact: <"...)
	out = append(out, f[1]...)
	return append(out, ">\r\nContent-Length: 0\r\n\r\n"...)
}

type result struct {
	name, step                 string
	offered, calls, ok, failed int
	elapsed                    time.Duration
	rate                       float64 // successful calls a second
	p50, p99, max              float64 // SIPp response times, ms
	serverCPU, sippCPU         time.Duration
	agentP50, agentP99         float64 // the agent's own decision time, µs
	goP50, goP99, goMax        float64 // the Go load generator's response times, µs
	goSentP50, goSentP99       float64
	goLost                     int
	decisions                  map[string]uint64
	exit                       int
}

func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// sipp runs one step against target and reads its response times.
func sipp(work, target string, rate, calls int) (result, error) {
	var r result
	port, err := testutil.PickPort("127.0.0.1")
	if err != nil {
		return r, err
	}
	for _, old := range must(filepath.Glob(filepath.Join(work, "uac_*"))) {
		os.Remove(old)
	}
	timeout := time.Duration(calls/max(rate, 1))*time.Second + 60*time.Second
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "sipp", "-sf", filepath.Join(work, "uac.xml"), "-inf", filepath.Join(work, "calls.csv"),
		"-i", "127.0.0.1", "-p", strconv.Itoa(port), "-t", "u1", "-r", strconv.Itoa(rate), "-m", strconv.Itoa(calls),
		"-l", "50000", "-nostdin", "-timeout", strconv.Itoa(int((timeout - 5*time.Second).Seconds())), "-timeout_error",
		"-max_recv_loops", "10000", "-max_sched_loops", "10000", "-buff_size", "8388608",
		"-trace_rtt", "-rtt_freq", "1000", "-trace_stat", "-stf", filepath.Join(work, "uac_stat.csv"), "-fd", "1", target)
	cmd.Dir = work
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	start := time.Now()
	err = cmd.Run()
	r.elapsed = time.Since(start)
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		r.exit = ee.ExitCode()
		fmt.Fprintf(os.Stderr, "sipp exited %d at %d/s; its last words:\n%s\n", r.exit, rate, tailOf(out.String(), 600))
	case err != nil:
		return r, fmt.Errorf("sipp: %w\n%s", err, out.String())
	}
	if cmd.ProcessState != nil {
		r.sippCPU = cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
	}
	r.offered, r.calls = rate, calls
	if err := readStat(filepath.Join(work, "uac_stat.csv"), &r); err != nil {
		return r, fmt.Errorf("%w\n%s", err, tailOf(out.String(), 2000))
	}
	rtts, first, last, err := readRTT(work)
	if err != nil {
		return r, err
	}
	if len(rtts) > 0 {
		slices.Sort(rtts)
		r.p50, r.p99, r.max = rtts[len(rtts)/2], rtts[min(len(rtts)-1, len(rtts)*99/100)], rtts[len(rtts)-1]
	}
	if span := last - first; span > 0 {
		r.rate = float64(len(rtts)) / (span / 1000)
	}
	return r, nil
}

func must[T any](v T, _ error) T { return v }

func tailOf(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// readStat reads the successful and failed call counts of the last line of SIPp's statistics.
func readStat(path string, r *result) error {
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("sipp statistics: %w", err)
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) < 2 {
		return fmt.Errorf("sipp statistics %s: no data", path)
	}
	head := strings.Split(lines[0], ";")
	last := strings.Split(lines[len(lines)-1], ";")
	for i, h := range head {
		if i >= len(last) {
			break
		}
		switch h {
		case "SuccessfulCall(C)":
			r.ok, _ = strconv.Atoi(last[i])
		case "FailedCall(C)":
			r.failed, _ = strconv.Atoi(last[i])
		}
	}
	return nil
}

// readRTT reads every response time SIPp traced (ms), and the first and last call times.
func readRTT(work string) (rtts []float64, first, last float64, err error) {
	files, _ := filepath.Glob(filepath.Join(work, "uac_*_rtt.csv"))
	if len(files) == 0 {
		return nil, 0, 0, errors.New("sipp wrote no response times")
	}
	f, err := os.Open(files[0])
	if err != nil {
		return nil, 0, 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		p := strings.Split(sc.Text(), ";")
		if len(p) < 2 {
			continue
		}
		at, err1 := strconv.ParseFloat(p[0], 64)
		rtt, err2 := strconv.ParseFloat(p[1], 64)
		if err1 != nil || err2 != nil {
			continue // the header
		}
		if first == 0 {
			first = at
		}
		last = at
		rtts = append(rtts, rtt)
	}
	return rtts, first, last, sc.Err()
}

func run(dir string, numbers, ips, rate, maxRate int, d time.Duration, badNumbers, badIPs float64, modes []string) error {
	if _, err := exec.LookPath("sipp"); err != nil {
		return fmt.Errorf("sipp not found (apt-get install sip-tester): %w", err)
	}
	ctx := context.Background()
	st, err := seed(ctx, dir, numbers, ips)
	if err != nil {
		return err
	}
	defer st.Close()
	work, err := os.MkdirTemp("", "dialtrap-bench-policy-sipp")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	if err := os.WriteFile(filepath.Join(work, "uac.xml"), scenario, 0o644); err != nil {
		return err
	}
	maxCalls := int(float64(maxRate) * d.Seconds())
	if err := writeCalls(filepath.Join(work, "calls.csv"), max(100_000, maxCalls), numbers, ips, badNumbers, badIPs); err != nil {
		return err
	}
	fmt.Printf("machine: %d CPUs, GOMAXPROCS %d; calls: %.0f%% to known-bad numbers, %.0f%% from known-bad callers\n",
		runtime.NumCPU(), runtime.GOMAXPROCS(0), badNumbers, badIPs)

	var results []result
	for _, mode := range modes {
		var srv server
		switch mode {
		case "bare":
			b, err := startBare()
			if err != nil {
				return err
			}
			srv = b
		case "exact", "national":
			a, err := policy.New(policy.Config{Addr: "127.0.0.1:0", Lookups: st, National: mode == "national",
				Log: slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))})
			if err != nil {
				return err
			}
			if err := a.Start(ctx); err != nil {
				return err
			}
			srv = agentServer{a}
		default:
			return fmt.Errorf("unknown mode %q (bare, exact, national)", mode)
		}
		// Warm up: the store's Bloom filters are built in the background after Start.
		time.Sleep(2 * time.Second)
		if _, err := sipp(work, srv.addr(), 2000, 4000); err != nil {
			srv.close()
			return err
		}
		// Latency with microsecond resolution (SIPp's clock ticks in milliseconds): the Go
		// load generator, open loop at -rate, timed from when each INVITE was due.
		g, err := loadgen(srv.addr(), filepath.Join(work, "calls.csv"), rate, d)
		if err != nil {
			srv.close()
			return err
		}
		for _, step := range []struct {
			name string
			rate int
		}{{"latency", rate}, {"throughput", maxRate}} {
			before := srv.status()
			cpu := cpuTime()
			r, err := sipp(work, srv.addr(), step.rate, int(float64(step.rate)*d.Seconds()))
			if err != nil {
				srv.close()
				return err
			}
			r.serverCPU = cpuTime() - cpu
			r.name, r.step = mode, step.name
			if step.name == "latency" {
				r.goP50, r.goP99, r.goMax, r.goLost = g.p50, g.p99, g.max, g.lost
				r.goSentP50, r.goSentP99 = g.sentP50, g.sentP99
			}
			if s := srv.status(); s != nil {
				r.agentP50, r.agentP99 = s.Latency.P50Micros, s.Latency.P99Micros
				r.decisions = map[string]uint64{}
				for k, v := range s.Decisions {
					if n := v - before.Decisions[k]; n > 0 {
						r.decisions[k] = n
					}
				}
			}
			results = append(results, r)
			printResult(r)
		}
		srv.close()
	}
	summary(results)
	return nil
}

func printResult(r result) {
	fmt.Printf("%-8s %-10s offered %6d/s  calls %7d ok %7d failed %5d (sipp exit %d)  rate %8.0f/s  rtt p50 %6.3f p99 %7.3f max %8.3f ms  server CPU %5.1f µs/call  sipp CPU %5.1f µs/call",
		r.name, r.step, r.offered, r.calls, r.ok, r.failed, r.exit, r.rate, r.p50, r.p99, r.max,
		float64(r.serverCPU.Microseconds())/float64(max(r.calls, 1)), float64(r.sippCPU.Microseconds())/float64(max(r.calls, 1)))
	if r.step == "latency" {
		fmt.Printf("  go-loadgen rtt from due p50 %.0f p99 %.0f max %.0f µs, from send p50 %.0f p99 %.0f µs, lost %d",
			r.goP50, r.goP99, r.goMax, r.goSentP50, r.goSentP99, r.goLost)
	}
	if r.decisions != nil {
		fmt.Printf("  agent p50 %.0f p99 %.0f µs (last minute)  %v", r.agentP50, r.agentP99, r.decisions)
	}
	fmt.Println()
}

func summary(rs []result) {
	find := func(name, step string) *result {
		for i := range rs {
			if rs[i].name == name && rs[i].step == step {
				return &rs[i]
			}
		}
		return nil
	}
	bare := find("bare", "throughput")
	for _, mode := range []string{"exact", "national"} {
		lat, thr := find(mode, "latency"), find(mode, "throughput")
		if lat == nil || thr == nil {
			continue
		}
		fmt.Printf("summary %-8s: at %d/s p99 %.0f µs from due, %.0f µs from send (Go load generator; SIPp: %.0f ms in its ms ticks; goal < 2 ms: %s), %d of %d SIPp calls failed;",
			mode, lat.offered, lat.goP99, lat.goSentP99, lat.p99, verdict(lat.goSentP99 < 2000 && lat.goLost == 0 && lat.failed == 0), lat.failed, lat.calls)
		fmt.Printf(" sustained %.0f/s", thr.rate)
		if bare != nil && bare.rate > 0 {
			cpuA := float64(thr.serverCPU) / float64(max(thr.calls, 1))
			cpuB := float64(bare.serverCPU) / float64(max(bare.calls, 1))
			fmt.Printf(" = %.2fx the bare responder's %.0f/s (goal >= 0.5x: %s); CPU per call %.2fx the bare responder's",
				thr.rate/bare.rate, bare.rate, verdict(thr.rate/bare.rate >= 0.5), cpuA/cpuB)
		}
		fmt.Println()
	}
}

func verdict(ok bool) string {
	if ok {
		return "met"
	}
	return "NOT met"
}

type loadResult struct {
	p50, p99, max    float64 // µs from when each INVITE was due
	sentP50, sentP99 float64 // µs from when it was written (the generator's own lag left out)
	lost             int
}

// loadgen sends INVITEs from the calls file at rate for d, open loop, and times each answer
// from when its INVITE was due, so a server that falls behind cannot hide its queue.
func loadgen(target, callsFile string, rate int, d time.Duration) (loadResult, error) {
	var lr loadResult
	b, err := os.ReadFile(callsFile)
	if err != nil {
		return lr, err
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")[1:]
	conn, err := net.Dial("udp", target)
	if err != nil {
		return lr, err
	}
	defer conn.Close()
	_ = conn.(*net.UDPConn).SetReadBuffer(8 << 20)
	local := conn.LocalAddr().String()
	n := int(float64(rate) * d.Seconds())
	reqs := make([][]byte, n)
	for i := range n {
		num, ip, _ := strings.Cut(lines[i%len(lines)], ";")
		reqs[i] = []byte("INVITE sip:" + num + "@carrier.example.com SIP/2.0\r\n" +
			"Via: SIP/2.0/UDP " + local + ";branch=z9hG4bK-lg" + strconv.Itoa(i) + ";rport\r\n" +
			"From: <sip:pbx@" + local + ">;tag=lg\r\nTo: <sip:" + num + "@carrier.example.com>\r\n" +
			"Call-ID: lg-" + strconv.Itoa(i) + "\r\nCSeq: 1 INVITE\r\nMax-Forwards: 70\r\n" +
			"X-Dialtrap-Caller: " + ip + "\r\nContent-Length: 0\r\n\r\n")
	}
	rtt := make([]int64, n)
	sent := make([]int64, n) // when each INVITE was written, in ns after start
	interval := time.Second / time.Duration(rate)
	start := time.Now().Add(10 * time.Millisecond)
	done := make(chan struct{})
	go func() {
		defer close(done)
		buf := make([]byte, 65536)
		for {
			m, err := conn.Read(buf)
			if err != nil {
				return
			}
			at := time.Now()
			i := bytes.Index(buf[:m], []byte("Call-ID: lg-"))
			if i < 0 {
				continue
			}
			rest := buf[i+len("Call-ID: lg-") : m]
			j := bytes.IndexByte(rest, '\r')
			k, err := strconv.Atoi(string(rest[:max(j, 0)]))
			if err != nil || k < 0 || k >= n {
				continue
			}
			rtt[k] = int64(at.Sub(start))
		}
	}()
	for i := 0; i < n; {
		due := start.Add(time.Duration(i) * interval)
		if wait := time.Until(due); wait > 0 {
			time.Sleep(wait)
		}
		for ; i < n && !start.Add(time.Duration(i)*interval).After(time.Now()); i++ {
			sent[i] = int64(time.Since(start))
			_, _ = conn.Write(reqs[i])
		}
	}
	time.Sleep(time.Second) // the last answers
	conn.Close()
	<-done
	var fromDue, fromSend []float64
	for i, v := range rtt {
		if v == 0 {
			lr.lost++
			continue
		}
		fromDue = append(fromDue, float64(v-int64(time.Duration(i)*interval))/1e3)
		fromSend = append(fromSend, float64(v-sent[i])/1e3)
	}
	if len(fromDue) > 0 {
		slices.Sort(fromDue)
		slices.Sort(fromSend)
		lr.p50, lr.p99, lr.max = fromDue[len(fromDue)/2], fromDue[min(len(fromDue)-1, len(fromDue)*99/100)], fromDue[len(fromDue)-1]
		lr.sentP50, lr.sentP99 = fromSend[len(fromSend)/2], fromSend[min(len(fromSend)-1, len(fromSend)*99/100)]
	}
	return lr, nil
}
