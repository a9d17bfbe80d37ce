package firewall

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/netip"
	"strconv"
	"sync"
	"time"
)

// NewDryRun returns a Set that touches nothing and writes each change to w, one line per
// element:
//
//	add 192.0.2.1 timeout 3600s
//	add 2001:db8::1                (no timeout: permanent)
//	del 192.0.2.1
//
// (a timeout that is not a whole second is written in milliseconds, "timeout 1500ms"), and
// "ensure" and "remove" for those calls. Len counts what the calls so far would have left in
// the sets, timeouts included.
func NewDryRun(w io.Writer) Set {
	return &dryRun{w: w, set: make(map[netip.Addr]time.Time), now: time.Now}
}

type dryRun struct {
	mu     sync.Mutex
	w      io.Writer
	set    map[netip.Addr]time.Time // address → expiry; zero: permanent
	now    func() time.Time
	closed bool
}

func (d *dryRun) write(ctx context.Context, b []byte) error {
	if d.closed {
		return ErrClosed
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if len(b) == 0 {
		return nil
	}
	if _, err := d.w.Write(b); err != nil {
		return fmt.Errorf("firewall: dry run: %w", err)
	}
	return nil
}

func (d *dryRun) Ensure(ctx context.Context) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.write(ctx, []byte("ensure\n"))
}

func (d *dryRun) Add(ctx context.Context, els []Element) error {
	v4, v6, err := split(els)
	if err != nil {
		return err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return ErrClosed
	}
	var b bytes.Buffer
	now := d.now()
	for _, e := range append(v4, v6...) {
		b.WriteString("add ")
		b.WriteString(e.Addr.String())
		var exp time.Time
		if e.Timeout > 0 {
			exp = now.Add(e.Timeout)
			b.WriteString(" timeout ")
			if e.Timeout%time.Second == 0 {
				b.WriteString(strconv.FormatInt(int64(e.Timeout/time.Second), 10))
				b.WriteString("s")
			} else {
				b.WriteString(strconv.FormatInt(int64(roundMillis(e.Timeout)/time.Millisecond), 10))
				b.WriteString("ms")
			}
		}
		b.WriteByte('\n')
		d.set[e.Addr] = exp
	}
	return d.write(ctx, b.Bytes())
}

func (d *dryRun) Delete(ctx context.Context, addrs []netip.Addr) error {
	v4, v6, err := splitAddrs(addrs)
	if err != nil {
		return err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return ErrClosed
	}
	var b bytes.Buffer
	for _, a := range append(v4, v6...) {
		b.WriteString("del ")
		b.WriteString(a.String())
		b.WriteByte('\n')
		delete(d.set, a)
	}
	return d.write(ctx, b.Bytes())
}

func (d *dryRun) Len(ctx context.Context) (v4, v6 int, err error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return 0, 0, ErrClosed
	}
	now := d.now()
	for a, exp := range d.set {
		if !exp.IsZero() && !now.Before(exp) {
			delete(d.set, a)
			continue
		}
		if a.Is4() {
			v4++
		} else {
			v6++
		}
	}
	return v4, v6, ctx.Err()
}

func (d *dryRun) Check(ctx context.Context) error { return nil }

func (d *dryRun) Remove(ctx context.Context) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return ErrClosed
	}
	clear(d.set)
	return d.write(ctx, []byte("remove\n"))
}

func (d *dryRun) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.closed = true
	return nil
}
