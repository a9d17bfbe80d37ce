package firewall

import (
	"context"
	"errors"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"
)

// newTestIPSet makes a namespace and an IPSet in it.
func newTestIPSet(t *testing.T, o IPSetOptions) (*IPSet, *netns) {
	t.Helper()
	needTool(t, "ipset", "ipset")
	ns := newNetns(t)
	if _, err := ns.try("ipset", "list"); err != nil {
		t.Skipf("ipset does not work here (kernel module ip_set missing?): %v", err)
	}
	o.Netns = ns.name
	s, err := NewIPSet(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s, ns
}

// ipsetMembers lists a set through the real ipset inside ns: address → timeout in seconds
// (-1 for a permanent member).
func ipsetMembers(t *testing.T, ns *netns, set string) map[string]int {
	t.Helper()
	out := ns.run(t, "ipset", "list", set)
	_, members, ok := strings.Cut(out, "Members:\n")
	if !ok {
		t.Fatalf("ipset list %s: no members section:\n%s", set, out)
	}
	m := map[string]int{}
	for _, line := range strings.Split(strings.TrimSpace(members), "\n") {
		f := strings.Fields(line)
		switch {
		case len(f) == 0:
		case len(f) >= 3 && f[1] == "timeout":
			n, err := strconv.Atoi(f[2])
			if err != nil {
				t.Fatalf("member %q: %v", line, err)
			}
			if n == 0 {
				n = -1
			}
			m[f[0]] = n
		default:
			m[f[0]] = -1
		}
	}
	return m
}

func TestIPSetEnsure(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name       string
		o          IPSetOptions
		set4, set6 string
	}{
		{"defaults", IPSetOptions{}, "dialtrap4", "dialtrap6"},
		{"named", IPSetOptions{Set4: "bl4", Set6: "bl6", MaxElem: 1000}, "bl4", "bl6"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s, ns := newTestIPSet(t, tc.o)
			ensure(t, s)
			add(t, s, el("192.0.2.1", time.Hour), el("2001:db8::1", 0))
			ensure(t, s) // again: the elements stay
			for _, c := range []struct{ set, family, member string }{
				{tc.set4, "inet", "192.0.2.1"},
				{tc.set6, "inet6", "2001:db8::1"},
			} {
				head := ns.run(t, "ipset", "list", "-t", c.set)
				for _, want := range []string{"Type: hash:ip\n", "family " + c.family + " ", "timeout 0"} {
					if !strings.Contains(head, want) {
						t.Errorf("set %s lacks %q:\n%s", c.set, want, head)
					}
				}
				if _, ok := ipsetMembers(t, ns, c.set)[c.member]; !ok {
					t.Errorf("%s lost %s in the second Ensure", c.set, c.member)
				}
			}
			// No iptables rule: ipset mode manages the sets only.
			if out, err := ns.try("iptables-save"); err == nil && strings.Contains(out, "match-set") {
				t.Errorf("IPSet added iptables rules:\n%s", out)
			}
		})
	}
}

// A set that exists with another maxelem is accepted; one of another type is not.
func TestIPSetEnsureExisting(t *testing.T) {
	t.Parallel()
	s, ns := newTestIPSet(t, IPSetOptions{})
	ns.run(t, "ipset", "create", "dialtrap4", "hash:ip", "family", "inet", "timeout", "0", "maxelem", "5000")
	ns.run(t, "ipset", "create", "dialtrap6", "hash:ip", "family", "inet6", "timeout", "0")
	ensure(t, s)
	ns.run(t, "ipset", "destroy", "dialtrap4")
	ns.run(t, "ipset", "create", "dialtrap4", "hash:net")
	err := s.Ensure(context.Background())
	if err == nil || !strings.Contains(err.Error(), "ipset destroy") {
		t.Fatalf("Ensure over a hash:net set: %v", err)
	}
}

func TestIPSetAddRefreshDelete(t *testing.T) {
	t.Parallel()
	s, ns := newTestIPSet(t, IPSetOptions{})
	ensure(t, s)
	ctx := context.Background()
	cases := []struct {
		addr          string
		first, second time.Duration
		set           string
		want          int // seconds, -1 permanent
	}{
		{"192.0.2.10", 100 * time.Second, 4 * time.Second, "dialtrap4", 4},
		{"192.0.2.11", 10 * time.Second, 1000 * time.Second, "dialtrap4", 1000},
		{"192.0.2.12", 100 * time.Second, 0, "dialtrap4", -1},
		{"192.0.2.13", 0, 50 * time.Second, "dialtrap4", 50},
		{"::ffff:192.0.2.14", 0, 3500 * time.Millisecond, "dialtrap4", 4},
		{"2001:db8::10", 100 * time.Second, 4 * time.Second, "dialtrap6", 4},
		{"2001:db8::11", 30 * 24 * time.Hour, 40 * 24 * time.Hour, "dialtrap6", 2147483},
	}
	for _, c := range cases {
		added := time.Now()
		add(t, s, el(c.addr, c.first))
		add(t, s, el(c.addr, c.second))
		key := netip.MustParseAddr(c.addr).Unmap().String()
		got, ok := ipsetMembers(t, ns, c.set)[key]
		// ipset lists the time left, which may be less by the seconds the adds and the
		// listing took (a loaded machine: the test runs beside other namespace tests).
		low := c.want
		if c.want > 0 {
			low = c.want - 1 - int(time.Since(added).Seconds())
		}
		if !ok || got < low || got > c.want {
			t.Errorf("%s: %v then %v: in set %v, timeout %d; want %d", c.addr, c.first, c.second, ok, got, c.want)
		}
	}
	checkLen(t, s, 5, 2)

	time.Sleep(5 * time.Second)
	m4, m6 := ipsetMembers(t, ns, "dialtrap4"), ipsetMembers(t, ns, "dialtrap6")
	for _, gone := range []string{"192.0.2.10", "192.0.2.14"} {
		if _, ok := m4[gone]; ok {
			t.Errorf("%s still there 5 s after a refresh to 4 s", gone)
		}
	}
	if _, ok := m6["2001:db8::10"]; ok {
		t.Error("2001:db8::10 still there 5 s after a refresh to 4 s")
	}
	checkLen(t, s, 3, 1)

	// Delete: present, expired, absent, all in one call.
	del := []netip.Addr{netip.MustParseAddr("192.0.2.11"), netip.MustParseAddr("192.0.2.10"),
		netip.MustParseAddr("198.51.100.1"), netip.MustParseAddr("2001:db8::11")}
	if err := s.Delete(ctx, del); err != nil {
		t.Fatal(err)
	}
	if err := s.Delete(ctx, del); err != nil {
		t.Fatalf("second Delete: %v", err)
	}
	checkLen(t, s, 2, 0)
}

func TestIPSetMixedAndLarge(t *testing.T) {
	t.Parallel()
	s, _ := newTestIPSet(t, IPSetOptions{})
	ensure(t, s)
	els := manyAddrs(1000, 1000)
	var first []Element
	for i, e := range els {
		switch i % 3 {
		case 0:
			first = append(first, e)
		case 1:
			first = append(first, Element{e.Addr, time.Second})
		}
	}
	add(t, s, first...)
	time.Sleep(2 * time.Second)
	add(t, s, els...)
	checkLen(t, s, 1000, 1000)

	els = manyAddrs(100000, 20000)
	start := time.Now()
	add(t, s, els...)
	t.Logf("ipset restore of %d elements: %v", len(els), time.Since(start))
	checkLen(t, s, 100000, 20000)
}

func TestIPSetRemove(t *testing.T) {
	t.Parallel()
	s, ns := newTestIPSet(t, IPSetOptions{})
	ctx := context.Background()
	if err := s.Remove(ctx); err != nil {
		t.Fatalf("Remove before Ensure: %v", err)
	}
	ensure(t, s)
	add(t, s, el("192.0.2.1", 0))
	if err := s.Remove(ctx); err != nil {
		t.Fatal(err)
	}
	if out := ns.run(t, "ipset", "list", "-n"); strings.TrimSpace(out) != "" {
		t.Fatalf("sets left after Remove: %s", out)
	}
	// Missing sets: Add says what to do.
	err := s.Add(ctx, []Element{el("192.0.2.1", 0)})
	if err == nil || !errors.Is(err, ErrMissing) {
		t.Errorf("Add without sets: %v", err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Ensure(ctx); !errors.Is(err, ErrClosed) {
		t.Errorf("Ensure after Close: %v", err)
	}
}

func TestNewIPSetMissingProgram(t *testing.T) {
	_, err := NewIPSet(IPSetOptions{Path: "/nonexistent/ipset"})
	if err == nil || !strings.Contains(err.Error(), "install it") {
		t.Fatalf("NewIPSet with a missing program: %v", err)
	}
}

func TestIPSetCheck(t *testing.T) {
	ns := newNetns(t)
	needTool(t, "ipset", "ipset")
	s, err := NewIPSet(IPSetOptions{Netns: ns.name})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := context.Background()
	if err := s.Check(ctx); !errors.Is(err, ErrMissing) {
		t.Errorf("before Ensure: %v, want ErrMissing", err)
	}
	if err := s.Ensure(ctx); err != nil {
		t.Fatal(err)
	}
	if err := s.Check(ctx); err != nil {
		t.Errorf("after Ensure: %v", err)
	}
	ns.run(t, "ipset", "destroy", "dialtrap6")
	if err := s.Check(ctx); !errors.Is(err, ErrMissing) {
		t.Errorf("after ipset destroy: %v, want ErrMissing", err)
	}
}
