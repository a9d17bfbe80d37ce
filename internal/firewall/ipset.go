package firewall

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"time"
)

// IPSetOptions configures NewIPSet. Empty fields take their defaults.
type IPSetOptions struct {
	// Set4 and Set6 are the sets: "hash:ip family inet timeout 0" and "hash:ip family inet6
	// timeout 0" (timeout support, elements permanent unless given a timeout); defaults
	// "dialtrap4" and "dialtrap6".
	Set4, Set6 string
	// MaxElem is the sets' maxelem; default 1,048,576 (ipset's own default, 65,536, is less
	// than a large block list). An existing set keeps its own.
	MaxElem int
	// Path is the ipset program; default "ipset" (looked up in PATH).
	Path string
	// Netns, when set, runs every command as `ip netns exec NETNS ipset ...` (for tests).
	Netns string
}

// MaxIPSetTimeout is the longest timeout ipset accepts (2,147,483 s, about 24.8 days); IPSet
// gives longer ones this one.
const MaxIPSetTimeout = 2147483 * time.Second

// IPSet is a Set made of two ipsets, driven by `ipset restore` (one process per call, the
// commands on its stdin; `-exist` makes add refresh the timeout of an element already there
// and del of an absent one a no-op).
//
// IPSet manages only the sets: it adds no iptables rule. The operator references them from
// their own rules, e.g.
//
//	iptables  -I INPUT -m set --match-set dialtrap4 src -j DROP
//	ip6tables -I INPUT -m set --match-set dialtrap6 src -j DROP
//
// (iptables-legacy and iptables-nft both have the set match; native nftables rules cannot
// refer to an ipset: there use NFT).
type IPSet struct {
	o  IPSetOptions
	mu sync.Mutex
	// closed is set by Close.
	closed bool
}

var _ Set = (*IPSet)(nil)

// NewIPSet checks the options and that the ipset program is there; it creates nothing: call
// Ensure.
func NewIPSet(o IPSetOptions) (*IPSet, error) {
	if o.Set4 == "" {
		o.Set4 = "dialtrap4"
	}
	if o.Set6 == "" {
		o.Set6 = "dialtrap6"
	}
	if o.Path == "" {
		o.Path = "ipset"
	}
	if o.MaxElem <= 0 {
		o.MaxElem = 1 << 20
	}
	for _, name := range []string{o.Set4, o.Set6} {
		if name == "" || len(name) > 31 || strings.ContainsAny(name, " \t\n\r\x00") {
			return nil, fmt.Errorf("firewall: ipset name %q: 1 to 31 characters, no blanks", name)
		}
	}
	if o.Set4 == o.Set6 {
		return nil, fmt.Errorf("firewall: the IPv4 and IPv6 sets need different names (both %q)", o.Set4)
	}
	if _, err := exec.LookPath(o.Path); err != nil {
		return nil, fmt.Errorf("firewall: ipset program %q not found: install it (apt-get install ipset) or give its path: %w", o.Path, err)
	}
	return &IPSet{o: o}, nil
}

// command returns the command for ipset args, inside the namespace if one is set.
func (s *IPSet) command(ctx context.Context, args ...string) *exec.Cmd {
	if s.o.Netns != "" {
		return exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", s.o.Netns, s.o.Path}, args...)...)
	}
	return exec.CommandContext(ctx, s.o.Path, args...)
}

// run runs ipset with args and stdin, under the lock, and returns its standard output.
func (s *IPSet) run(ctx context.Context, what string, stdin []byte, args ...string) ([]byte, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, ErrClosed
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	cmd := s.command(ctx, args...)
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.WaitDelay = 5 * time.Second
	if err := cmd.Run(); err != nil {
		if ctx.Err() != nil {
			return nil, fmt.Errorf("firewall: ipset: %s: %w (%w)", what, ctx.Err(), err)
		}
		return nil, s.explain(what, strings.TrimSpace(stderr.String()), err)
	}
	return stdout.Bytes(), nil
}

// ipsetNoSet is part of ipset's message for a set that does not exist.
const ipsetNoSet = "does not exist"

// explain wraps a failed ipset run with its message and what the operator can do.
func (s *IPSet) explain(what, msg string, err error) error {
	var hint string
	switch {
	case errors.Is(err, exec.ErrNotFound):
		hint = "install ipset (apt-get install ipset) or give its path"
	case strings.Contains(msg, "Operation not permitted"), strings.Contains(msg, "must be root"),
		strings.Contains(msg, "Permission denied"):
		hint = capNetAdmin
	case strings.Contains(msg, ipsetNoSet):
		return fmt.Errorf("firewall: ipset: %s: set %s or %s is missing (destroyed by someone else?): %s: %w: %w", what, s.o.Set4, s.o.Set6, msg, ErrMissing, err)
	case strings.Contains(msg, "already exists"):
		hint = "a set of that name exists with other parameters (see 'ipset list -t'): destroy it ('ipset destroy NAME', after removing the rules that use it) or configure other names"
	case strings.Contains(msg, "in use by a kernel component"):
		hint = "an iptables rule still references the set: delete that rule first"
	case strings.Contains(msg, "Kernel support protocol versions"), strings.Contains(msg, "Cannot open session"),
		strings.Contains(msg, "Protocol not supported"):
		hint = "the kernel lacks ip_set: load the modules (modprobe ip_set ip_set_hash_ip)"
	case strings.Contains(msg, "is full"):
		hint = fmt.Sprintf("the set reached its maxelem: destroy it and let the agent recreate it with a larger one (now %d)", s.o.MaxElem)
	}
	if msg == "" {
		msg = "(no message)"
	}
	if hint == "" {
		return fmt.Errorf("firewall: ipset: %s: %s: %w", what, msg, err)
	}
	return fmt.Errorf("firewall: ipset: %s: %s: %s: %w", what, hint, msg, err)
}

// Ensure creates the two sets where missing (`create -exist` leaves existing ones and their
// elements alone).
func (s *IPSet) Ensure(ctx context.Context) error {
	script := fmt.Sprintf("create %s hash:ip family inet timeout 0 maxelem %d\ncreate %s hash:ip family inet6 timeout 0 maxelem %d\n",
		s.o.Set4, s.o.MaxElem, s.o.Set6, s.o.MaxElem)
	_, err := s.run(ctx, "create sets", []byte(script), "-exist", "restore")
	if err != nil && strings.Contains(err.Error(), "already exists") {
		// -exist accepts an identical set only; one made with another maxelem or hashsize is
		// fine too, if it is the right type with timeouts.
		if ok, lerr := s.compatible(ctx); lerr == nil && ok {
			return nil
		}
	}
	return err
}

// compatible reports whether both sets exist as hash:ip of their family with timeouts.
func (s *IPSet) compatible(ctx context.Context) (bool, error) {
	for _, c := range []struct{ name, family string }{{s.o.Set4, "inet"}, {s.o.Set6, "inet6"}} {
		out, err := s.run(ctx, "list set "+c.name, nil, "list", "-t", c.name)
		if err != nil {
			return false, err
		}
		text := string(out)
		if !strings.Contains(text, "Type: hash:ip\n") || !strings.Contains(text, "family "+c.family+" ") ||
			!strings.Contains(text, " timeout ") {
			return false, nil
		}
	}
	return true, nil
}

// ipsetSeconds is d in ipset's whole seconds, rounded up and capped at MaxIPSetTimeout.
func ipsetSeconds(d time.Duration) int64 {
	if d > MaxIPSetTimeout {
		d = MaxIPSetTimeout
	}
	return int64((d + time.Second - 1) / time.Second)
}

// Add adds els with their timeouts (refreshing those already there) with one `ipset restore`.
func (s *IPSet) Add(ctx context.Context, els []Element) error {
	v4, v6, err := split(els)
	if err != nil {
		return err
	}
	if len(v4)+len(v6) == 0 {
		return ctx.Err()
	}
	var b bytes.Buffer
	b.Grow((len(v4) + len(v6)) * 48)
	for _, part := range []struct {
		set string
		els []Element
	}{{s.o.Set4, v4}, {s.o.Set6, v6}} {
		for _, e := range part.els {
			b.WriteString("add ")
			b.WriteString(part.set)
			b.WriteByte(' ')
			b.WriteString(e.Addr.String())
			b.WriteString(" timeout ")
			b.WriteString(strconv.FormatInt(ipsetSeconds(e.Timeout), 10))
			b.WriteByte('\n')
		}
	}
	_, err = s.run(ctx, fmt.Sprintf("add %d addresses", len(v4)+len(v6)), b.Bytes(), "-exist", "restore")
	return err
}

// Delete removes addrs with one `ipset restore`; absent ones are no error.
func (s *IPSet) Delete(ctx context.Context, addrs []netip.Addr) error {
	v4, v6, err := splitAddrs(addrs)
	if err != nil {
		return err
	}
	if len(v4)+len(v6) == 0 {
		return ctx.Err()
	}
	var b bytes.Buffer
	for _, part := range []struct {
		set   string
		addrs []netip.Addr
	}{{s.o.Set4, v4}, {s.o.Set6, v6}} {
		for _, a := range part.addrs {
			fmt.Fprintf(&b, "del %s %s\n", part.set, a)
		}
	}
	_, err = s.run(ctx, fmt.Sprintf("delete %d addresses", len(v4)+len(v6)), b.Bytes(), "-exist", "restore")
	return err
}

// Len counts the members of both sets (`ipset save`, which leaves out expired ones).
func (s *IPSet) Len(ctx context.Context) (v4, v6 int, err error) {
	count := func(name string) (int, error) {
		out, err := s.run(ctx, "list set "+name, nil, "save", name)
		if err != nil {
			return 0, err
		}
		n := 0
		prefix := []byte("add " + name + " ")
		sc := bufio.NewScanner(bytes.NewReader(out))
		for sc.Scan() {
			if bytes.HasPrefix(sc.Bytes(), prefix) {
				n++
			}
		}
		return n, sc.Err()
	}
	if v4, err = count(s.o.Set4); err != nil {
		return 0, 0, err
	}
	if v6, err = count(s.o.Set6); err != nil {
		return 0, 0, err
	}
	return v4, v6, nil
}

// Check reports whether both sets still exist: nil if so, an error wrapping ErrMissing if
// not. It reads their headers only.
func (s *IPSet) Check(ctx context.Context) error {
	for _, name := range []string{s.o.Set4, s.o.Set6} {
		if _, err := s.run(ctx, "look up set "+name, nil, "list", "-t", name); err != nil {
			return err
		}
	}
	return nil
}

// Remove destroys both sets; one already gone is no error. It fails while an iptables rule
// still references a set.
func (s *IPSet) Remove(ctx context.Context) error {
	var errs []error
	for _, name := range []string{s.o.Set4, s.o.Set6} {
		if _, err := s.run(ctx, "destroy set "+name, nil, "destroy", name); err != nil &&
			!strings.Contains(err.Error(), ipsetNoSet) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// Close marks the set closed; there is nothing to release.
func (s *IPSet) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	return nil
}
