// Command nftapply measures how fast internal/firewall's NFT puts a large block list into an
// nftables set, next to `nft -f` of a script that adds the same elements (the baseline),
// measured in the same run on the same machine.
//
// Everything happens in a network namespace of its own (dtbench-PID), deleted at the end, so
// the host's firewall is not touched. It needs root (CAP_NET_ADMIN and CAP_SYS_ADMIN) and the
// nft and ip programs. For each run it:
//
//	(a) times `nft -f` of one "add element" statement with N IPv4 elements, each with a
//	    timeout, into an empty set (table and set made beforehand, not timed);
//	(b) times NFT.Add of the same N elements into an empty set (Ensure beforehand, not timed);
//	(c) times NFT.Add of the same N again: all present, every timeout refreshed;
//	(d) reports the peak RSS of the process that ran (b) and (c) (getrusage) and its Go
//	    runtime's memory; then times NFT.Len (a netlink dump) and NFT.Delete of the N.
//
// Steps (b) to (d) run in a child process of their own, one per run, so that its peak RSS is
// that of NFT alone; the parent stays small, so that nft's peak RSS is nft's own (a child
// started with vfork inherits its parent's peak). It prints the median and the best of the
// runs and the ratio of the medians to the baseline.
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/dialtrap/dialtrap/internal/firewall"
)

func main() {
	var (
		n     = flag.Int("n", 100_000, "IPv4 elements")
		runs  = flag.Int("runs", 3, "runs of every step")
		tx    = flag.Int("tx", 0, "NFTOptions.MaxTransactionBytes (0: the default, 1 MiB)")
		child = flag.String("child", "", "internal: run steps (b) to (d) in this namespace")
	)
	flag.Parse()
	var err error
	if *child != "" {
		err = runChild(*child, *n, *tx)
	} else {
		err = bench(*n, *runs, *tx)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "nftapply:", err)
		os.Exit(1)
	}
}

// elements returns the N elements: 10.0.0.0 upwards, timeouts 1 h to 1 h 10 min.
func elements(n int) []firewall.Element {
	els := make([]firewall.Element, n)
	for i := range els {
		els[i] = firewall.Element{
			Addr:    netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}),
			Timeout: time.Hour + time.Duration(i%600)*time.Second,
		}
	}
	return els
}

func maxRSSKiB() int64 {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return ru.Maxrss
}

// runChild runs (b) to (d) and prints "key=value" lines for the parent.
func runChild(ns string, n, tx int) error {
	f, err := os.Open("/run/netns/" + ns)
	if err != nil {
		return err
	}
	defer f.Close()
	ctx := context.Background()
	set, err := firewall.NewNFT(firewall.NFTOptions{NetNS: int(f.Fd()), MaxTransactionBytes: tx})
	if err != nil {
		return err
	}
	defer set.Close()
	if err := set.Ensure(ctx); err != nil {
		return err
	}
	els := elements(n)
	runtime.GC()
	fmt.Printf("rss0=%d\n", maxRSSKiB())
	start := time.Now()
	if err := set.Add(ctx, els); err != nil {
		return err
	}
	fmt.Printf("b=%d\n", time.Since(start))
	start = time.Now()
	if err := set.Add(ctx, els); err != nil {
		return err
	}
	fmt.Printf("c=%d\n", time.Since(start))
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	fmt.Printf("rss=%d\nsys=%d\nheap=%d\n", maxRSSKiB(), ms.Sys>>10, ms.HeapSys>>10)

	start = time.Now()
	v4, _, err := set.Len(ctx)
	if err != nil {
		return err
	}
	fmt.Printf("len=%d\n", time.Since(start))
	if v4 != n {
		return fmt.Errorf("NFT set holds %d elements, want %d", v4, n)
	}
	addrs := make([]netip.Addr, n)
	for i, e := range els {
		addrs[i] = e.Addr
	}
	start = time.Now()
	if err := set.Delete(ctx, addrs); err != nil {
		return err
	}
	fmt.Printf("del=%d\n", time.Since(start))
	if v4, _, err = set.Len(ctx); err != nil || v4 != 0 {
		return fmt.Errorf("after Delete: %d elements, %v", v4, err)
	}
	fmt.Printf("rssend=%d\n", maxRSSKiB())
	if err := set.Remove(ctx); err != nil {
		return err
	}
	// The baseline's set, which the parent filled with nft -f.
	base, err := firewall.NewNFT(firewall.NFTOptions{Table: "nftbase", NoChain: true, NetNS: int(f.Fd())})
	if err != nil {
		return err
	}
	defer base.Close()
	v4, _, err = base.Len(ctx)
	if err != nil {
		return err
	}
	fmt.Printf("base=%d\n", v4)
	return nil
}

type step struct {
	name  string
	key   string
	times []time.Duration
}

func (s *step) median() time.Duration {
	t := slices.Clone(s.times)
	slices.Sort(t)
	return t[len(t)/2]
}

func bench(n, runs, tx int) error {
	if os.Geteuid() != 0 {
		return fmt.Errorf("needs root (a network namespace and nftables in it)")
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	ns := fmt.Sprintf("dtbench-%d", os.Getpid())
	if out, err := exec.Command("ip", "netns", "add", ns).CombinedOutput(); err != nil {
		return fmt.Errorf("ip netns add %s: %v: %s", ns, err, out)
	}
	defer exec.Command("ip", "netns", "del", ns).Run()

	file, err := os.CreateTemp("", "nftapply-*.nft")
	if err != nil {
		return err
	}
	defer os.Remove(file.Name())
	w := bufio.NewWriter(file)
	w.WriteString("add element inet nftbase blocklist4 { ")
	for i, e := range elements(n) {
		if i > 0 {
			w.WriteString(", ")
		}
		fmt.Fprintf(w, "%s timeout %ds", e.Addr, e.Timeout/time.Second)
	}
	w.WriteString(" }\n")
	if err := w.Flush(); err != nil {
		return err
	}
	if err := file.Close(); err != nil {
		return err
	}
	runtime.GC()

	nft := func(args ...string) (*os.ProcessState, error) {
		cmd := exec.Command("ip", append([]string{"netns", "exec", ns, "nft"}, args...)...)
		out, err := cmd.CombinedOutput()
		if err != nil {
			return nil, fmt.Errorf("nft %s: %v: %s", strings.Join(args, " "), err, out)
		}
		return cmd.ProcessState, nil
	}
	steps := []*step{
		{name: "(a) nft -f, empty set (baseline)", key: "a"},
		{name: "(b) NFT.Add, empty set", key: "b"},
		{name: "(c) NFT.Add, refresh (all present)", key: "c"},
		{name: "(d) NFT.Len (netlink dump)", key: "len"},
		{name: "    NFT.Delete", key: "del"},
	}
	var nftRSS int64
	kv := map[string]int64{}
	for range runs {
		if _, err := nft("add table inet nftbase; add set inet nftbase blocklist4 { type ipv4_addr; flags timeout; }; " +
			"add set inet nftbase blocklist6 { type ipv6_addr; flags timeout; }"); err != nil {
			return err
		}
		start := time.Now()
		ps, err := nft("-f", file.Name())
		if err != nil {
			return err
		}
		steps[0].times = append(steps[0].times, time.Since(start))
		nftRSS = max(nftRSS, ps.SysUsage().(*syscall.Rusage).Maxrss)

		out, err := exec.Command(self, "-child", ns, "-n", strconv.Itoa(n), "-tx", strconv.Itoa(tx)).Output()
		if err != nil {
			if ee, ok := err.(*exec.ExitError); ok {
				return fmt.Errorf("child: %v: %s", err, ee.Stderr)
			}
			return err
		}
		for _, line := range strings.Fields(string(out)) {
			k, v, _ := strings.Cut(line, "=")
			x, err := strconv.ParseInt(v, 10, 64)
			if err != nil {
				return fmt.Errorf("child said %q", line)
			}
			switch k {
			case "rss0", "rss", "rssend", "sys", "heap":
				kv[k] = max(kv[k], x)
			case "base":
				if x != int64(n) {
					return fmt.Errorf("nft -f left %d elements, want %d", x, n)
				}
			default:
				for _, s := range steps {
					if s.key == k {
						s.times = append(s.times, time.Duration(x))
					}
				}
			}
		}
		if _, err := nft("delete table inet nftbase"); err != nil {
			return err
		}
	}

	var uname syscall.Utsname
	_ = syscall.Uname(&uname)
	release := make([]byte, 0, len(uname.Release))
	for _, c := range uname.Release {
		if c == 0 {
			break
		}
		release = append(release, byte(c))
	}
	nftVersion, _ := exec.Command("nft", "--version").Output()
	txText := "default"
	if tx > 0 {
		txText = strconv.Itoa(tx) + " bytes"
	}
	fmt.Printf("nftapply: %d IPv4 elements with timeouts, %d runs, MaxTransactionBytes %s; kernel %s, %s, %d CPUs\n\n",
		n, runs, txText, release, strings.TrimSpace(string(nftVersion)), runtime.NumCPU())
	fmt.Printf("%-36s %9s %9s %7s\n", "step", "median", "best", "ratio")
	baseline := steps[0].median()
	for _, s := range steps {
		fmt.Printf("%-36s %9s %9s %7.2f\n", s.name, s.median().Round(time.Millisecond),
			slices.Min(s.times).Round(time.Millisecond), float64(s.median())/float64(baseline))
	}
	fmt.Printf("\nratio: median / median of (a)\n")
	fmt.Printf("peak RSS, NFT process (getrusage): %d MiB before (b) with the elements built, %d MiB after (b) and (c), %d MiB after (d)\n",
		kv["rss0"]>>10, kv["rss"]>>10, kv["rssend"]>>10)
	fmt.Printf("Go runtime after (c): Sys %d MiB, HeapSys %d MiB\n", kv["sys"]>>10, kv["heap"]>>10)
	fmt.Printf("peak RSS, nft -f: %d MiB\n", nftRSS>>10)
	return nil
}
