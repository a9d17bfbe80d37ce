// Command feeds measures the blocklist feeds and the firewall agent against baselines taken
// in the same run on the same machine:
//
//   - render: 100,000 addresses (80% IPv4, 20% IPv6, all verified) in each feed format,
//     through feed.Render into a discarding writer, against a bare scan (one SQL query over
//     the addresses, each written with a newline: what any exporter must at least do). Each
//     format's time and its growth of the process's peak RSS (VmHWM reset through
//     /proc/self/clear_refs before each) are reported; the goal is under 200 ms and 20 MiB.
//   - agent (-bin, as root): a node (-R -a) on the seeded database and `dialtrap block` in a
//     network namespace of their own; the time from the agent's start to its full sync, the
//     set's size, and the agent's peak RSS (goal under 50 MiB), next to `nft -f` of the
//     same set as a script from the node's nft feed.
//
// The database is seeded once into -dir through the store's own write path.
package main

import (
	"bufio"
	"context"
	"database/sql"
	"flag"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/dialtrap/dialtrap/internal/event"
	"github.com/dialtrap/dialtrap/internal/feed"
	"github.com/dialtrap/dialtrap/internal/store"
	"github.com/dialtrap/dialtrap/internal/store/sqlite"

	_ "modernc.org/sqlite"
)

func main() {
	var (
		n    = flag.Int("n", 100_000, "addresses")
		dir  = flag.String("dir", filepath.Join(os.TempDir(), "dialtrap-bench-feeds"), "seeded data directory (reused)")
		runs = flag.Int("runs", 5, "runs of each render (the median is reported)")
		bin  = flag.String("bin", "", "dialtrap binary: also measure the agent (needs root, ip, nft)")
		prof = flag.String("cpu-profile", "", "write a CPU profile of the renders here")
	)
	flag.Parse()
	if *prof != "" {
		f, err := os.Create(*prof)
		if err == nil {
			pprof.StartCPUProfile(f)
			defer pprof.StopCPUProfile()
		}
	}
	if err := run(*n, *dir, *runs, *bin); err != nil {
		pprof.StopCPUProfile()
		fmt.Fprintln(os.Stderr, "feeds:", err)
		os.Exit(1)
	}
}

func run(n int, dir string, runs int, bin string) error {
	ctx := context.Background()
	db := filepath.Join(dir, "dialtrap.db")
	if err := seed(ctx, db, n); err != nil {
		return err
	}
	st, err := sqlite.Open(ctx, db)
	if err != nil {
		return err
	}
	defer st.Close()
	runtime.GC()
	fmt.Printf("%d addresses, %d runs each, GOMAXPROCS %d\n\n", n, runs, runtime.GOMAXPROCS(0))
	fmt.Printf("%-28s %10s %8s %14s %10s\n", "step", "median", "ratio", "peak RSS +MiB", "bytes")
	base, _, _, err := measure(runs, func() (int64, error) { return bareScan(ctx, db) })
	if err != nil {
		return err
	}
	fmt.Printf("%-28s %10s %8s %14s %10s\n", "bare scan (baseline)", base.Round(time.Millisecond), "1.00", "-", "-")
	ips, _ := feed.NewIPGuard(nil, true)
	nums, _ := feed.NewNumberGuard(nil)
	g := feed.Guards{IPs: ips, Numbers: nums}
	for _, format := range []string{"plain", "ipset", "nft", "json", "csv"} {
		q, err := feed.ParseQuery(store.IPAddresses, url.Values{"format": {format}, "ttl": {"24h"}}, time.Now())
		if err != nil {
			return err
		}
		d, grow, size, err := measure(runs, func() (int64, error) {
			var c countWriter
			err := feed.Render(ctx, &c, st, q, g, time.Now(), nil)
			return c.n, err
		})
		if err != nil {
			return err
		}
		fmt.Printf("%-28s %10s %8.2f %14.1f %10d\n", "render "+format, d.Round(time.Millisecond), float64(d)/float64(base), float64(grow)/(1<<20), size)
	}
	if bin != "" {
		return agent(ctx, bin, dir, n)
	}
	return nil
}

type countWriter struct{ n int64 }

func (c *countWriter) Write(p []byte) (int, error) { c.n += int64(len(p)); return len(p), nil }

// measure runs f runs times and returns the median time, the largest growth of peak RSS
// over the RSS before a run, and what f returned last.
func measure(runs int, f func() (int64, error)) (time.Duration, int64, int64, error) {
	var times []time.Duration
	var grow, size int64
	for range runs {
		runtime.GC()
		os.WriteFile("/proc/self/clear_refs", []byte("5"), 0) // resets VmHWM to the current RSS
		before := statusKiB("VmRSS:")
		start := time.Now()
		var err error
		if size, err = f(); err != nil {
			return 0, 0, 0, err
		}
		times = append(times, time.Since(start))
		grow = max(grow, (statusKiB("VmHWM:")-before)<<10)
	}
	sort.Slice(times, func(i, j int) bool { return times[i] < times[j] })
	return times[len(times)/2], grow, size, nil
}

func statusKiB(key string) int64 {
	return statusOf("self", key)
}

func statusOf(pid, key string) int64 {
	b, _ := os.ReadFile("/proc/" + pid + "/status")
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == key {
			v, _ := strconv.ParseInt(f[1], 10, 64)
			return v
		}
	}
	return 0
}

// bareScan is the floor: every address out of SQLite once, a line each.
func bareScan(ctx context.Context, path string) (int64, error) {
	db, err := sql.Open("sqlite", "file:"+path+"?mode=ro")
	if err != nil {
		return 0, err
	}
	defer db.Close()
	rows, err := db.QueryContext(ctx, `SELECT ip_address FROM ip_addresses`)
	if err != nil {
		return 0, err
	}
	defer rows.Close()
	w := bufio.NewWriterSize(io.Discard, 64<<10)
	var n int64
	var ip string
	for rows.Next() {
		if err := rows.Scan(&ip); err != nil {
			return 0, err
		}
		w.WriteString(ip)
		w.WriteByte('\n')
		n += int64(len(ip) + 1)
	}
	return n, rows.Err()
}

// seed stores n verified sightings of distinct public addresses, seen in the last hour.
func seed(ctx context.Context, path string, n int) error {
	if have, _, err := sqlite.SchemaVersion(ctx, path); err == nil && have > 0 {
		st, err := sqlite.OpenReadOnly(ctx, path)
		if err == nil {
			c, _ := st.Count(ctx, store.IPAddresses, "")
			st.Close()
			if c == int64(n) {
				return nil
			}
		}
		os.RemoveAll(filepath.Dir(path))
	}
	os.MkdirAll(filepath.Dir(path), 0o755)
	st, err := sqlite.Open(ctx, path)
	if err != nil {
		return err
	}
	defer st.Close()
	now := time.Now()
	var batch []*event.Event
	for i := range n {
		ip := fmt.Sprintf("45.%d.%d.%d", (i>>16)&255, (i>>8)&255, i&255)
		if i%5 == 4 {
			ip = fmt.Sprintf("2a0e:8f02:%x::%x", i>>16, i&0xffff)
		}
		batch = append(batch, &event.Event{AppName: event.AppName, Timestamp: event.FormatTime(now.Add(-time.Duration(i%3600) * time.Second)),
			UUID: fmt.Sprintf("00000000-0000-4000-8000-%012d", i), NodeID: "bench", CollectedMethod: event.Responsive,
			Transport: event.UDP, SourceIP: ip, CalledNumber: "0046812118532", SIPMethod: "INVITE", SourceVerified: true})
		if len(batch) == 5000 {
			if err := st.Write(ctx, batch); err != nil {
				return err
			}
			batch = batch[:0]
		}
	}
	return st.Write(ctx, batch)
}

// agent runs a node and the agent in a namespace of their own and reports the agent's full
// sync of the seeded set, next to nft -f of the same set.
func agent(ctx context.Context, bin, dir string, n int) error {
	ns := fmt.Sprintf("dtbenchfeeds-%d", os.Getpid())
	if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
		return fmt.Errorf("ip netns add (run as root): %v %s", err, out)
	}
	defer exec.Command("ip", "netns", "del", ns).Run()
	inNS := func(args ...string) *exec.Cmd {
		return exec.Command("ip", append([]string{"netns", "exec", ns}, args...)...)
	}
	inNS("ip", "link", "set", "lo", "up").Run()
	node := inNS(bin, "-R", "-a", "--api-addr", "127.0.0.1:8082", "--data-dir", dir)
	if err := node.Start(); err != nil {
		return err
	}
	defer func() { node.Process.Signal(os.Interrupt); node.Wait() }()
	// The node's own nft feed, loaded by nft -f: the baseline.
	var script []byte
	for range 100 {
		out, err := inNS("bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/8082 2>/dev/null && printf 'GET /feeds/ip-addresses?format=nft&ttl=24h HTTP/1.0\\r\\n\\r\\n' >&3 && cat <&3").Output()
		if err == nil && len(out) > 1000 {
			if i := strings.Index(string(out), "\r\n\r\n"); i > 0 {
				script = out[i+4:]
				break
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	if script == nil {
		return fmt.Errorf("the node in the namespace served no nft feed")
	}
	nftCmd := inNS("nft", "-f", "-")
	nftCmd.Stdin = strings.NewReader(string(script))
	start := time.Now()
	if out, err := nftCmd.CombinedOutput(); err != nil {
		return fmt.Errorf("nft -f: %v %s", err, out)
	}
	nftTime := time.Since(start)
	inNS("nft", "delete", "table", "inet", "dialtrap").Run()

	state := filepath.Join(os.TempDir(), fmt.Sprintf("dtbench-block-%d.json", os.Getpid()))
	defer os.Remove(state)
	// The agent logs "in step with the node" (-v) once the whole set is in the kernel: read
	// as it is written (the state file is written at most once a second).
	ag := inNS(bin, "block", "--node", "http://127.0.0.1:8082", "--state-file", state, "-v")
	logs, err := ag.StderrPipe()
	if err != nil {
		return err
	}
	start = time.Now()
	if err := ag.Start(); err != nil {
		return err
	}
	defer func() { ag.Process.Signal(os.Interrupt); ag.Wait() }()
	syncedAt := make(chan time.Duration, 1)
	go func() {
		sc := bufio.NewScanner(logs)
		for sc.Scan() {
			if strings.Contains(sc.Text(), "in step with the node") {
				syncedAt <- time.Since(start)
				break
			}
		}
		io.Copy(io.Discard, logs)
	}()
	var synced time.Duration
	select {
	case synced = <-syncedAt:
	case <-time.After(2 * time.Minute):
	}
	if synced == 0 {
		return fmt.Errorf("the agent did not sync within 2 minutes")
	}
	hwm := statusOf(strconv.Itoa(ag.Process.Pid), "VmHWM:")
	// Elements with a timeout, one "timeout" each, less the set's "flags timeout".
	count, _ := inNS("sh", "-c", "for s in 4 6; do echo $(( $(nft list set inet dialtrap blocklist$s | grep -o timeout | wc -l) - 1 )); done").Output()
	fmt.Printf("\n%-28s %10s %8s\n", "agent", "time", "ratio")
	fmt.Printf("%-28s %10s %8s\n", "nft -f of the nft feed", nftTime.Round(time.Millisecond), "1.00")
	fmt.Printf("%-28s %10s %8.2f   (stream, parse, apply; set elements with timeouts, v4 and v6 lines: %s)\n",
		"agent start to full sync", synced.Round(time.Millisecond), float64(synced)/float64(nftTime), strings.Join(strings.Fields(string(count)), " + "))
	fmt.Printf("agent peak RSS              %.1f MiB (VmHWM; goal < 50 MiB)\n", float64(hwm)/1024)
	return nil
}
