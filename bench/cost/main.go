// Command cost measures what a dialtrap node spends per probe at the rates honeypots really
// see, next to a bare Go UDP reader measured in the same run at the same rates.
//
// For each rate it starts a fresh node (SQLite store and JSON log on, its defaults otherwise)
// and sends a fixed number of distinct INVITE probes (each with its own number, so nothing
// folds) from four loopback sources. The node's CPU time is read from /proc (the sum of its
// threads' schedstat run times, in ns) from just before the first probe until every probe is
// stored, which this program checks by reading the database itself, so that waiting costs the
// node nothing. Then, on the same node, a second pass at the same rate follows a sample of the
// probes through the lookup API (GET /numbers/{n}) and reports the delay from send to visible.
// The bare reader gets the same probes at the same rates; its CPU is read the same way.
//
// Before the steps, the node's idle cost is measured: CPU over -idle with no traffic, and its
// RSS at rest with an empty store. All traffic stays on 127.0.0.0/8.
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/netip"
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

	"github.com/dialtrap/dialtrap/internal/store/sqlite"
	"github.com/dialtrap/dialtrap/internal/testutil"
)

func main() {
	var (
		bin      = flag.String("bin", "./bin/dialtrap", "dialtrap binary")
		rates    = flag.String("rates", "10,100,500,1000,5000,20000", "offered rates, probes/s")
		events   = flag.Int("events", 1000, "probes per step (more when -min-duration needs them)")
		minDur   = flag.Duration("min-duration", 2*time.Second, "each step sends for at least this long")
		samples  = flag.Int("samples", 200, "probes followed through the API per step for the delay")
		idle     = flag.Duration("idle", 10*time.Second, "how long the idle node is watched")
		reader   = flag.Int("reader", 0, "internal: run as the bare reader on this port")
		noBare   = flag.Bool("no-bare", false, "skip the bare reader")
		extra    = flag.String("node-args", "", "more flags for the node, space-separated")
		profile  = flag.String("node-profile", "", "write the node's CPU profile of the last step here")
		sourcesN = flag.Int("sources", 4, "source addresses (127.0.0.2 ...)")
		numbers  = flag.Int("numbers", 0, "distinct numbers the probes of a step cycle through (0: every probe a new number, so none folds and each is a stored event)")
	)
	flag.Parse()
	if *reader != 0 {
		testutil.ServeBareUDP(*reader)
		return
	}
	c := config{bin: *bin, events: *events, minDur: *minDur, samples: *samples, idle: *idle,
		bare: !*noBare, nodeArgs: strings.Fields(*extra), profile: *profile, sources: *sourcesN, numbers: *numbers}
	for _, s := range strings.Split(*rates, ",") {
		r, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || r <= 0 {
			fmt.Fprintf(os.Stderr, "cost: bad rate %q\n", s)
			os.Exit(2)
		}
		c.rates = append(c.rates, r)
	}
	if err := run(c); err != nil {
		fmt.Fprintln(os.Stderr, "cost:", err)
		os.Exit(1)
	}
}

type config struct {
	bin             string
	rates           []int
	events, samples int
	sources         int
	numbers         int
	minDur, idle    time.Duration
	bare            bool
	nodeArgs        []string
	profile         string
}

type step struct {
	rate, events   int
	nodeCPU        time.Duration // node CPU from the first probe to the last stored
	bareCPU        time.Duration // bare reader CPU over the same probes
	bareGot        int64
	p50, p99, pmax time.Duration // send to visible in the API
	switches       int64         // the node's threads' context switches in the CPU pass
	followed       int
	missed         int
}

func (s step) per1000(d time.Duration, n int) float64 {
	return d.Seconds() * 1000 / float64(n)
}

func run(c config) error {
	self, err := os.Executable()
	if err != nil {
		return err
	}
	pool := fmt.Sprintf("a pool of %d numbers", c.numbers)
	if c.numbers <= 0 {
		pool = "a new number each"
	}
	fmt.Printf("cost benchmark: %d cores, node flags %v, %d sources, probes to %s; CPU from /proc/PID/task/*/schedstat\n\n",
		testutil.CPUs(), c.nodeArgs, c.sources, pool)

	// Idle: a fresh node with an empty store and no traffic.
	n, err := startNode(c.bin, c.nodeArgs, "")
	if err != nil {
		return err
	}
	time.Sleep(2 * time.Second) // let start-up work settle
	cpu0 := cpuTime(n.pid())
	v0, nv0 := switches(n.pid())
	time.Sleep(c.idle)
	idleCPU := cpuTime(n.pid()) - cpu0
	v1, nv1 := switches(n.pid())
	rss := testutil.ProcStatusKiB(n.pid(), "VmRSS:")
	n.stop()
	fmt.Printf("idle node: %.3f ms CPU per second over %v (%.4f%% of one core), %.1f thread wake-ups per second; RSS at rest with an empty store %.1f MiB\n\n",
		idleCPU.Seconds()*1000/c.idle.Seconds(), c.idle, idleCPU.Seconds()*100/c.idle.Seconds(),
		float64(v1-v0+nv1-nv0)/c.idle.Seconds(), float64(rss)/1024)

	var steps []step
	for i, rate := range c.rates {
		events := max(c.events, int(float64(rate)*c.minDur.Seconds()))
		s := step{rate: rate, events: events}
		prof := ""
		if i == len(c.rates)-1 {
			prof = c.profile
		}
		if err := nodeStep(c, &s, i, prof); err != nil {
			return fmt.Errorf("%d/s: %w", rate, err)
		}
		if c.bare {
			if err := bareStep(self, c, &s, i); err != nil {
				return fmt.Errorf("%d/s bare reader: %w", rate, err)
			}
		}
		fmt.Printf("%6d/s: %6d probes, node %.4f s CPU per 1,000 (%.1f µs each), %.1f thread switches each; bare reader %.4f s; delay send→API p50 %v p99 %v max %v (%d followed, %d never seen)\n",
			rate, events, s.per1000(s.nodeCPU, events), s.nodeCPU.Seconds()*1e6/float64(events),
			float64(s.switches)/float64(events), s.per1000(s.bareCPU, events), s.p50.Round(time.Millisecond), s.p99.Round(time.Millisecond), s.pmax.Round(time.Millisecond), s.followed, s.missed)
		steps = append(steps, s)
	}
	fmt.Println()
	fmt.Println("| probes/s | probes | node CPU s per 1,000 | µs per event | bare reader CPU s per 1,000 | node / bare | p99 send→API | max |")
	fmt.Println("|---:|---:|---:|---:|---:|---:|---:|---:|")
	for _, s := range steps {
		ratio := "-"
		if s.bareCPU > 0 {
			ratio = fmt.Sprintf("%.1f×", float64(s.nodeCPU)/float64(s.bareCPU))
		}
		fmt.Printf("| %d | %d | %.4f | %.1f | %.4f | %s | %v | %v |\n", s.rate, s.events,
			s.per1000(s.nodeCPU, s.events), s.nodeCPU.Seconds()*1e6/float64(s.events),
			s.per1000(s.bareCPU, s.events), ratio, s.p99.Round(time.Millisecond), s.pmax.Round(time.Millisecond))
	}
	return nil
}

// nodeStep runs one rate on a fresh node: the CPU pass, then the delay pass.
func nodeStep(c config, s *step, idx int, profile string) error {
	n, err := startNode(c.bin, c.nodeArgs, profile)
	if err != nil {
		return err
	}
	defer n.stop()
	db, err := sqlite.OpenReadOnly(context.Background(), n.db)
	if err != nil {
		return err
	}
	defer db.Close()
	time.Sleep(time.Second)

	// Pass 1: CPU. Numbers 1<idx><seq> are unique to this pass.
	d := time.Duration(float64(s.events) / float64(s.rate) * float64(time.Second))
	cpu0 := cpuTime(n.pid())
	v0, nv0 := switches(n.pid())
	sent, err := testutil.Flood(context.Background(), n.sip, s.rate, d, c.sources, func(i int64) []byte {
		return probe(number(1, idx, c.pooled(i)), i)
	})
	if err != nil {
		return err
	}
	if sent < int64(s.events) {
		return fmt.Errorf("sent %d of %d probes", sent, s.events)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		got, err := db.CountEvents(context.Background())
		if err != nil {
			return err
		}
		if got >= sent {
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("only %d of %d probes stored after 30 s", got, sent)
		}
		time.Sleep(10 * time.Millisecond)
	}
	s.nodeCPU = cpuTime(n.pid()) - cpu0
	v1, nv1 := switches(n.pid())
	s.switches = v1 - v0 + nv1 - nv0

	// Pass 2: delay. Every k-th probe is followed through the API.
	if c.samples <= 0 {
		return nil
	}
	pass2 := max(c.samples, int(float64(s.rate)*c.minDur.Seconds()))
	every := max(1, pass2/c.samples)
	d = time.Duration(float64(pass2) / float64(s.rate) * float64(time.Second))
	var (
		mu     sync.Mutex
		delays []time.Duration
		wg     sync.WaitGroup
		missed atomic.Int64
	)
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
	follow := func(num string, sentAt time.Time) {
		defer wg.Done()
		url := "http://" + n.api + "/numbers/" + num + "?match=exact"
		for time.Since(sentAt) < 10*time.Second {
			resp, err := client.Get(url)
			if err == nil {
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode == http.StatusOK {
					mu.Lock()
					delays = append(delays, time.Since(sentAt))
					mu.Unlock()
					return
				}
			}
			time.Sleep(2 * time.Millisecond)
		}
		missed.Add(1)
	}
	_, err = testutil.Flood(context.Background(), n.sip, s.rate, d, c.sources, func(i int64) []byte {
		if i%int64(every) == 0 {
			num := number(2, idx, i) // never sent before: visible only once this probe is
			wg.Add(1)
			go follow(num, time.Now())
			return probe(num, i)
		}
		return probe(number(1, idx, c.pooled(i)), i)
	})
	wg.Wait()
	if err != nil {
		return err
	}
	slices.Sort(delays)
	s.followed, s.missed = len(delays), int(missed.Load())
	if len(delays) > 0 {
		q := func(p float64) time.Duration { return delays[min(len(delays)-1, int(p*float64(len(delays))))] }
		s.p50, s.p99, s.pmax = q(0.50), q(0.99), delays[len(delays)-1]
	}
	return nil
}

// bareStep sends the CPU pass's probes to the bare reader and reads its CPU the same way.
func bareStep(self string, c config, s *step, idx int) error {
	port, err := testutil.PickPort("127.0.0.1")
	if err != nil {
		return err
	}
	cmd := exec.Command(self, "-reader", strconv.Itoa(port))
	out, err := cmd.StdoutPipe()
	if err != nil {
		return err
	}
	if err := cmd.Start(); err != nil {
		return err
	}
	defer cmd.Wait()
	defer cmd.Process.Signal(syscall.SIGTERM)
	br := bufio.NewReader(out)
	if _, err := br.ReadString('\n'); err != nil {
		return fmt.Errorf("did not start: %w", err)
	}
	time.Sleep(500 * time.Millisecond)
	dst := netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, 1}), uint16(port))
	d := time.Duration(float64(s.events) / float64(s.rate) * float64(time.Second))
	cpu0 := cpuTime(cmd.Process.Pid)
	if _, err := testutil.Flood(context.Background(), dst, s.rate, d, c.sources, func(i int64) []byte {
		return probe(number(1, idx, c.pooled(i)), i)
	}); err != nil {
		return err
	}
	time.Sleep(50 * time.Millisecond)
	s.bareCPU = cpuTime(cmd.Process.Pid) - cpu0
	_ = cmd.Process.Signal(syscall.SIGTERM)
	line, _ := br.ReadString('\n')
	s.bareGot, _ = strconv.ParseInt(strings.TrimSpace(line), 10, 64)
	return nil
}

// pooled is the index of probe i's number in the pool of c.numbers.
func (c config) pooled(i int64) int64 {
	if c.numbers <= 0 {
		return i
	}
	return i % int64(c.numbers)
}

// number is a distinct dialled number for probe i of a pass of step idx.
func number(pass, idx int, i int64) string {
	return fmt.Sprintf("9%d%02d%08d", pass, idx, i)
}

func probe(num string, i int64) []byte {
	id := strconv.FormatInt(i, 10)
	return []byte("INVITE sip:" + num + "@127.0.0.1 SIP/2.0\r\n" +
		"Via: SIP/2.0/UDP 127.0.0.2:5070;branch=z9hG4bK-" + id + ";rport\r\n" +
		"Max-Forwards: 70\r\nTo: <sip:" + num + "@127.0.0.1>\r\nFrom: \"100\" <sip:100@127.0.0.1>;tag=a1b2\r\n" +
		"User-Agent: friendly-scanner\r\nCall-ID: " + id + "\r\nContact: sip:100@127.0.0.2:5070\r\n" +
		"CSeq: 1 INVITE\r\nAccept: application/sdp\r\nContent-Length: 0\r\n\r\n")
}

type node struct {
	cmd      *exec.Cmd
	dir, db  string
	sip      netip.AddrPort
	api      string
	stopOnce sync.Once
}

func (n *node) pid() int { return n.cmd.Process.Pid }

func (n *node) stop() {
	n.stopOnce.Do(func() {
		_ = n.cmd.Process.Signal(syscall.SIGTERM)
		_ = n.cmd.Wait()
		os.RemoveAll(n.dir)
	})
}

func startNode(bin string, extra []string, profile string) (*node, error) {
	dir, err := os.MkdirTemp("", "dialtrap-cost-")
	if err != nil {
		return nil, err
	}
	sipPort, err := testutil.PickPort("127.0.0.1")
	if err != nil {
		return nil, err
	}
	apiPort, err := testutil.PickPort("127.0.0.1")
	if err != nil {
		return nil, err
	}
	n := &node{dir: dir, db: filepath.Join(dir, "dialtrap.db"),
		sip: netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, 1}), uint16(sipPort)),
		api: fmt.Sprintf("127.0.0.1:%d", apiPort)}
	args := []string{"-v", "-j", "-a", "--data-dir", dir, "--sip-addr", fmt.Sprintf(":%d", sipPort),
		"--sip-tls=false", "--api-addr", n.api}
	if profile != "" {
		args = append(args, "--cpu-profile", profile)
	}
	n.cmd = exec.Command(bin, append(args, extra...)...)
	if err := testutil.StartNode(n.cmd, 15*time.Second); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	return n, nil
}

// cpuTime is the CPU time of every thread of pid so far, from /proc/PID/task/*/schedstat
// (ns; /proc/PID/stat counts in 10 ms ticks, too coarse for a slow step).
func cpuTime(pid int) time.Duration {
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/schedstat", pid))
	var sum int64
	for _, t := range tasks {
		b, err := os.ReadFile(t)
		if err != nil {
			continue // a thread that just ended
		}
		f := strings.Fields(string(b))
		if len(f) > 0 {
			v, _ := strconv.ParseInt(f[0], 10, 64)
			sum += v
		}
	}
	return time.Duration(sum)
}

// switches sums the voluntary and involuntary context switches of pid's threads.
func switches(pid int) (vol, invol int64) {
	tasks, _ := filepath.Glob(fmt.Sprintf("/proc/%d/task/*/status", pid))
	for _, t := range tasks {
		b, err := os.ReadFile(t)
		if err != nil {
			continue
		}
		for _, l := range strings.Split(string(b), "\n") {
			f := strings.Fields(l)
			if len(f) == 2 && f[0] == "voluntary_ctxt_switches:" {
				v, _ := strconv.ParseInt(f[1], 10, 64)
				vol += v
			}
			if len(f) == 2 && f[0] == "nonvoluntary_ctxt_switches:" {
				v, _ := strconv.ParseInt(f[1], 10, 64)
				invol += v
			}
		}
	}
	return vol, invol
}
