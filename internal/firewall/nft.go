package firewall

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// NFTOptions configures NewNFT. Empty fields take their defaults.
type NFTOptions struct {
	// Table is the nftables table, family inet; default "dialtrap". It is the agent's own:
	// Remove deletes it with everything in it.
	Table string
	// Set4 and Set6 are the sets (type ipv4_addr / ipv6_addr, flags timeout); defaults
	// "blocklist4" and "blocklist6".
	Set4, Set6 string
	// Chain is the base chain Ensure creates (type filter, hook input, priority -10, so before
	// the usual filter chains at 0; policy accept) with the two rules
	//
	//	ip saddr @blocklist4 counter drop
	//	ip6 saddr @blocklist6 counter drop
	//
	// Default "input". The chain is the agent's: when its rules are not exactly these two,
	// Ensure replaces them (so their counters survive a restart only when they are).
	Chain string
	// NoChain makes Ensure create only the table and the sets; the operator adds rules that
	// refer to the sets (they must be in the same table).
	NoChain bool
	// NetNS is a file descriptor of a network namespace to work in (for tests); 0 is the
	// namespace of the calling process.
	NetNS int
	// MaxTransactionBytes caps the size of one netlink transaction. 0 is 1 MiB (see "Large
	// calls" in NFT's documentation), or less if the socket's send buffer cannot be raised
	// that far (SO_SNDBUFFORCE needs CAP_NET_ADMIN; else net.core.wmem_max caps it). A call
	// that needs more is carried out in several transactions.
	MaxTransactionBytes int
}

const (
	defaultTxBytes = 1 << 20
	// rcvBuffer holds the kernel's acknowledgements of one transaction (one per message).
	rcvBuffer = 8 << 20
	// ackTrueSize is what one acknowledgement costs in the receive buffer (skb overhead
	// included), counted generously.
	ackTrueSize = 2048
	// maxAttr is what the elements of one message may take: the list is one netlink
	// attribute, whose length is 16 bits.
	maxAttr = 60000
)

// NFT is a Set in nftables, driven over netlink through one lasting connection.
//
// # Refresh
//
// "add element" of an element that is already there leaves its timeout as it was on kernels
// before 6.10 (and no kernel makes a timed element permanent that way), and "delete element"
// of an absent one makes the kernel reject the whole transaction (ENOENT). So Add sends, for
// each element and all in one transaction:
//
//	add element X              (no timeout: creates X if absent or expired, else changes nothing)
//	delete element X           (X is there now, so this cannot fail)
//	add element X timeout T    (a new X with the requested timeout, or none)
//
// and Delete sends the first two. The kernel applies a transaction in order and atomically:
// packets see either the old X or the new one, never a gap, and whether X was present,
// expired or absent before does not matter, so no read of the set is needed. This uses only
// NEWSETELEM and DELSETELEM inside one transaction, which hash sets with timeouts have
// supported since Linux 4.x; NFT_MSG_DESTROYSETELEM (Linux 6.3) would save the first message
// but google/nftables v0.3.0 cannot send it.
//
// # Large calls
//
// The elements of one message are one netlink attribute (at most 64 KiB), so a call is cut
// into messages of at most 2,048 IPv4 or 1,536 IPv6 elements, sent in transactions of at most
// MaxTransactionBytes (default 1 MiB: about 16,000 IPv4 or 10,000 IPv6 elements, counting the
// three messages per chunk), one sendmsg and one Flush each. A call that fits is one atomic
// transaction; a larger one (a full load of the list) is several, each atomic, the call as a
// whole not. Measured with bench/nftapply on Linux 6.18, 100,000 IPv4 elements into an empty
// set: one 6 MiB transaction took 0.64 s and a 62 MiB peak RSS, 1 MiB transactions 0.30 s and
// 38 MiB (the kernel's cost grows faster than linearly with the size of a transaction).
type NFT struct {
	o NFTOptions

	mu      sync.Mutex
	conn    *nftables.Conn
	nl      *netlink.Conn // conn's lasting socket, for deadlines
	txMax   int           // bytes of one transaction
	txMsgs  int           // messages of one transaction
	flushes int           // transactions sent (for tests)
	closed  bool

	table      *nftables.Table
	set4, set6 *nftables.Set
	chain      *nftables.Chain
}

var _ Set = (*NFT)(nil)

// NewNFT opens a netlink connection for the table described by o. It creates nothing:
// call Ensure.
func NewNFT(o NFTOptions) (*NFT, error) {
	if o.Table == "" {
		o.Table = "dialtrap"
	}
	if o.Set4 == "" {
		o.Set4 = "blocklist4"
	}
	if o.Set6 == "" {
		o.Set6 = "blocklist6"
	}
	if o.Chain == "" {
		o.Chain = "input"
	}
	if o.MaxTransactionBytes <= 0 {
		o.MaxTransactionBytes = defaultTxBytes
	}
	for _, name := range []string{o.Table, o.Set4, o.Set6, o.Chain} {
		if len(name) > unix.NFT_NAME_MAXLEN-1 || strings.ContainsRune(name, 0) {
			return nil, fmt.Errorf("firewall: nftables name %q: too long or contains NUL", name)
		}
	}
	if o.Set4 == o.Set6 {
		return nil, fmt.Errorf("firewall: the IPv4 and IPv6 sets need different names (both %q)", o.Set4)
	}
	t := &nftables.Table{Name: o.Table, Family: nftables.TableFamilyINet}
	n := &NFT{
		o:     o,
		table: t,
		// Set IDs of our own (they only need to differ within a transaction): with ID 0,
		// AddSet would take one from a package variable it changes without a lock, a data
		// race between two NFTs.
		set4: &nftables.Set{Table: t, Name: o.Set4, ID: 1, KeyType: nftables.TypeIPAddr,
			HasTimeout: true, KeyByteOrder: binaryutil.BigEndian},
		set6: &nftables.Set{Table: t, Name: o.Set6, ID: 2, KeyType: nftables.TypeIP6Addr,
			HasTimeout: true, KeyByteOrder: binaryutil.BigEndian},
		chain: &nftables.Chain{Name: o.Chain, Table: t, Type: nftables.ChainTypeFilter,
			Hooknum: nftables.ChainHookInput, Priority: nftables.ChainPriorityRef(-10),
			Policy: ptr(nftables.ChainPolicyAccept)},
	}
	if err := n.dial(); err != nil {
		return nil, err
	}
	return n, nil
}

func ptr[T any](v T) *T { return &v }

// dial opens the lasting connection and sizes its buffers.
func (n *NFT) dial() error {
	var nl *netlink.Conn
	var sndbuf, rcvbuf int
	opts := []nftables.ConnOption{
		nftables.AsLasting(),
		nftables.WithSockOptions(func(c *netlink.Conn) error {
			nl = c
			// Errors without a copy of the (up to 64 KiB) request. (Not with
			// ExtendedAcknowledge too: mdlayher/netlink then misreads the errors.)
			_ = c.SetOption(netlink.CapAcknowledge, true)
			sndbuf = setBuffer(c, unix.SO_SNDBUFFORCE, unix.SO_SNDBUF, n.o.MaxTransactionBytes+64<<10)
			rcvbuf = setBuffer(c, unix.SO_RCVBUFFORCE, unix.SO_RCVBUF, rcvBuffer)
			return nil
		}),
	}
	if n.o.NetNS != 0 {
		opts = append(opts, nftables.WithNetNSFd(n.o.NetNS))
	}
	conn, err := nftables.New(opts...)
	if err != nil {
		return n.explain("open netlink connection", err)
	}
	n.conn, n.nl = conn, nl
	// The kernel refuses a sendmsg larger than the send buffer (what getsockopt reports).
	n.txMax = min(n.o.MaxTransactionBytes, sndbuf-64<<10)
	if n.txMax < 4*maxAttr {
		n.txMax = 4 * maxAttr // one chunk's three messages, plus the rest
	}
	n.txMsgs = max(rcvbuf/ackTrueSize, 16)
	return nil
}

// setBuffer asks for size bytes with the forcing option (CAP_NET_ADMIN), else the plain one
// (capped by net.core.[rw]mem_max), and returns what the socket has.
func setBuffer(c *netlink.Conn, force, plain, size int) int {
	raw, err := c.SyscallConn()
	if err != nil {
		return 0
	}
	got := 0
	_ = raw.Control(func(fd uintptr) {
		if unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, force, size) != nil {
			_ = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, plain, size)
		}
		got, _ = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, plain)
	})
	return got
}

// do runs f under the lock with ctx's deadline and cancellation on the socket. After an error
// the connection is replaced: acknowledgements left unread would confuse the next call.
func (n *NFT) do(ctx context.Context, f func() error) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return ErrClosed
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if n.conn == nil { // an earlier redial failed
		if err := n.dial(); err != nil {
			return err
		}
	}
	nl := n.nl
	if d, ok := ctx.Deadline(); ok && nl != nil {
		_ = nl.SetDeadline(d)
	}
	fired := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		if nl != nil {
			_ = nl.SetDeadline(time.Unix(1, 0))
		}
		close(fired)
	})
	err := f()
	if !stop() {
		<-fired
	}
	if nl != nil {
		_ = nl.SetDeadline(time.Time{})
	}
	if err != nil {
		if ctx.Err() != nil {
			err = fmt.Errorf("%w (%w)", ctx.Err(), err)
		}
		_ = n.conn.CloseLasting()
		n.conn, n.nl = nil, nil
		if derr := n.dial(); derr != nil {
			err = errors.Join(err, derr)
		}
	}
	return err
}

// Ensure creates the table, the two sets and (unless NoChain) the chain with its two drop
// rules, where missing. Elements already in the sets stay.
func (n *NFT) Ensure(ctx context.Context) error {
	return n.do(ctx, func() error {
		c := n.conn
		c.AddTable(n.table)
		if err := c.AddSet(n.set4, nil); err != nil {
			return fmt.Errorf("firewall: nft set %s: %w", n.set4.Name, err)
		}
		if err := c.AddSet(n.set6, nil); err != nil {
			return fmt.Errorf("firewall: nft set %s: %w", n.set6.Name, err)
		}
		if !n.o.NoChain {
			c.AddChain(n.chain)
		}
		if err := c.Flush(); err != nil {
			return n.explain("create table inet "+n.o.Table+" and its sets", err)
		}
		if n.o.NoChain {
			return nil
		}
		rules, err := c.GetRules(n.table, n.chain)
		if err != nil {
			return n.explain("list chain "+n.o.Chain, err)
		}
		if len(rules) == 2 && n.isDrop(rules[0], false) && n.isDrop(rules[1], true) {
			return nil // as wanted; their counters go on
		}
		c.FlushChain(n.chain)
		c.AddRule(&nftables.Rule{Table: n.table, Chain: n.chain, Exprs: n.dropExprs(false)})
		c.AddRule(&nftables.Rule{Table: n.table, Chain: n.chain, Exprs: n.dropExprs(true)})
		if err := c.Flush(); err != nil {
			return n.explain("add the drop rules to chain "+n.o.Chain, err)
		}
		return nil
	})
}

// dropExprs is `ip saddr @set4 counter drop` or `ip6 saddr @set6 counter drop`.
func (n *NFT) dropExprs(v6 bool) []expr.Any {
	proto, off, size, set := byte(unix.NFPROTO_IPV4), uint32(12), uint32(4), n.set4
	if v6 {
		proto, off, size, set = unix.NFPROTO_IPV6, 8, 16, n.set6
	}
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{proto}},
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: size},
		&expr.Lookup{SourceRegister: 1, SetName: set.Name, SetID: set.ID},
		&expr.Counter{},
		&expr.Verdict{Kind: expr.VerdictDrop},
	}
}

// isDrop reports whether r is the rule dropExprs(v6) makes (counter values aside).
func (n *NFT) isDrop(r *nftables.Rule, v6 bool) bool {
	want := n.dropExprs(v6)
	if len(r.Exprs) != len(want) {
		return false
	}
	for i, e := range r.Exprs {
		ok := false
		switch w := want[i].(type) {
		case *expr.Meta:
			g, is := e.(*expr.Meta)
			ok = is && g.Key == w.Key && !g.SourceRegister && g.Register == w.Register
		case *expr.Cmp:
			g, is := e.(*expr.Cmp)
			ok = is && g.Op == w.Op && g.Register == w.Register && string(g.Data) == string(w.Data)
		case *expr.Payload:
			g, is := e.(*expr.Payload)
			ok = is && g.OperationType == expr.PayloadLoad && g.DestRegister == w.DestRegister &&
				g.Base == w.Base && g.Offset == w.Offset && g.Len == w.Len
		case *expr.Lookup:
			g, is := e.(*expr.Lookup)
			ok = is && g.SourceRegister == w.SourceRegister && g.SetName == w.SetName &&
				!g.Invert && !g.IsDestRegSet
		case *expr.Counter:
			_, ok = e.(*expr.Counter)
		case *expr.Verdict:
			g, is := e.(*expr.Verdict)
			ok = is && g.Kind == w.Kind
		}
		if !ok {
			return false
		}
	}
	return true
}

// Add puts els in the sets with their timeouts, refreshing those already there (see the
// type's documentation), in one netlink transaction unless the call is very large.
func (n *NFT) Add(ctx context.Context, els []Element) error {
	v4, v6, err := split(els)
	if err != nil {
		return err
	}
	return n.change(ctx, v4, v6, nil, nil)
}

// Delete removes addrs from the sets; absent ones are no error (see the type's
// documentation).
func (n *NFT) Delete(ctx context.Context, addrs []netip.Addr) error {
	v4, v6, err := splitAddrs(addrs)
	if err != nil {
		return err
	}
	return n.change(ctx, nil, nil, v4, v6)
}

// change makes the additions and deletions of both families in one batch.
func (n *NFT) change(ctx context.Context, add4, add6 []Element, del4, del6 []netip.Addr) error {
	if len(add4)+len(add6)+len(del4)+len(del6) == 0 {
		return ctx.Err()
	}
	return n.do(ctx, func() error {
		b := n.newBatch()
		if err := b.add(n.set4, add4, del4); err != nil {
			return err
		}
		if err := b.add(n.set6, add6, del6); err != nil {
			return err
		}
		return b.flush()
	})
}

// batch fills the connection's buffer and flushes it whenever the next chunk would go past
// the transaction's limits.
type batch struct {
	n           *NFT
	bytes, msgs int
	what        string
}

func (n *NFT) newBatch() *batch { return &batch{n: n} }

// add queues, for the chunks of els (Add) or addrs (Delete): add, delete, and for Add the
// final add with timeouts. The three messages of a chunk are never split between
// transactions.
func (b *batch) add(set *nftables.Set, els []Element, addrs []netip.Addr) error {
	total := len(els) + len(addrs)
	if total == 0 {
		return nil
	}
	keyLen := 4
	if set == b.n.set6 {
		keyLen = 16
	}
	bareBytes := 12 + keyLen     // item, key and value attributes
	timedBytes := bareBytes + 12 // and the timeout
	hdrBytes := 128 + len(set.Name) + len(set.Table.Name)
	per := 2048
	if keyLen == 16 {
		per = 1536
	}
	per = min(per, maxAttr/timedBytes)
	bare := make([]nftables.SetElement, 0, per)
	timed := make([]nftables.SetElement, 0, per)
	b.what = "add to"
	if els == nil {
		b.what = "delete from"
	}
	for start := 0; start < total; start += per {
		end := min(start+per, total)
		bare, timed = bare[:0], timed[:0]
		for i := start; i < end; i++ {
			if els != nil {
				e := els[i]
				key := e.Addr.AsSlice()
				bare = append(bare, nftables.SetElement{Key: key})
				timed = append(timed, nftables.SetElement{Key: key, Timeout: roundMillis(e.Timeout)})
			} else {
				bare = append(bare, nftables.SetElement{Key: addrs[i].AsSlice()})
			}
		}
		count := end - start
		msgs, size := 2, 2*(hdrBytes+count*bareBytes)
		if els != nil {
			msgs, size = 3, size+hdrBytes+count*timedBytes
		}
		if b.msgs > 0 && (b.bytes+size > b.n.txMax || b.msgs+msgs > b.n.txMsgs) {
			if err := b.flush(); err != nil {
				return err
			}
		}
		c := b.n.conn
		if err := c.SetAddElements(set, bare); err != nil {
			return fmt.Errorf("firewall: nft set %s: %w", set.Name, err)
		}
		if err := c.SetDeleteElements(set, bare); err != nil {
			return fmt.Errorf("firewall: nft set %s: %w", set.Name, err)
		}
		if els != nil {
			if err := c.SetAddElements(set, timed); err != nil {
				return fmt.Errorf("firewall: nft set %s: %w", set.Name, err)
			}
		}
		b.bytes += size
		b.msgs += msgs
	}
	return nil
}

func (b *batch) flush() error {
	if b.msgs == 0 {
		return nil
	}
	b.bytes, b.msgs = 0, 0
	b.n.flushes++
	if err := b.n.conn.Flush(); err != nil {
		return b.n.explain(b.what+" sets "+b.n.o.Set4+"/"+b.n.o.Set6, err)
	}
	return nil
}

// roundMillis rounds d up to a whole millisecond, so that a positive timeout never becomes 0
// (permanent) on the wire.
func roundMillis(d time.Duration) time.Duration {
	return (d + time.Millisecond - 1).Truncate(time.Millisecond)
}

// Len counts the elements of both sets: one netlink dump each, counted as it comes, without
// decoding the elements. The kernel restarts its walk of the set for every dump message, so
// this grows faster than linearly with the set: on Linux 6.18, 0.65 s for 100,000 elements,
// 2.6 s for 200,000 (`nft list set`: 0.7 s and 1.8 s). Do not call it often on a large set.
func (n *NFT) Len(ctx context.Context) (v4, v6 int, err error) {
	err = n.do(ctx, func() error {
		var err error
		if v4, err = n.count(n.set4); err != nil {
			return n.explain("list set "+n.o.Set4, err)
		}
		if v6, err = n.count(n.set6); err != nil {
			return n.explain("list set "+n.o.Set6, err)
		}
		return nil
	})
	return v4, v6, err
}

// Check reports whether both sets, and (unless NoChain) the two drop rules, are still there
// (a firewall reload, 'nft flush table', may have removed them): nil if so, an error wrapping
// ErrMissing if not. It is cheap: a few lookups, no element read.
func (n *NFT) Check(ctx context.Context) error {
	return n.do(ctx, func() error {
		for _, set := range []*nftables.Set{n.set4, n.set6} {
			if _, err := n.conn.GetSetByName(set.Table, set.Name); err != nil {
				return n.explain("look up set "+set.Name, err)
			}
		}
		if n.o.NoChain {
			return nil
		}
		rules, err := n.conn.GetRules(n.table, n.chain)
		if err != nil {
			return n.explain("list chain "+n.o.Chain, err)
		}
		if len(rules) != 2 || !n.isDrop(rules[0], false) || !n.isDrop(rules[1], true) {
			return fmt.Errorf("firewall: nft: chain %s of table inet %s lacks its drop rules: %w", n.o.Chain, n.o.Table, ErrMissing)
		}
		return nil
	})
}

// count dumps set's elements over the lasting socket and counts them.
func (n *NFT) count(set *nftables.Set) (int, error) {
	if n.nl == nil {
		return 0, errors.New("no netlink socket")
	}
	attrs, err := netlink.MarshalAttributes([]netlink.Attribute{
		{Type: unix.NFTA_SET_ELEM_LIST_TABLE, Data: []byte(set.Table.Name + "\x00")},
		{Type: unix.NFTA_SET_ELEM_LIST_SET, Data: []byte(set.Name + "\x00")},
	})
	if err != nil {
		return 0, err
	}
	msgs, err := n.nl.Execute(netlink.Message{
		Header: netlink.Header{
			Type:  netlink.HeaderType(unix.NFNL_SUBSYS_NFTABLES<<8 | unix.NFT_MSG_GETSETELEM),
			Flags: netlink.Request | netlink.Dump,
		},
		Data: append([]byte{unix.NFPROTO_INET, unix.NFNETLINK_V0, 0, 0}, attrs...),
	})
	if err != nil {
		return 0, err
	}
	total := 0
	for _, m := range msgs {
		if len(m.Data) < 4 {
			continue
		}
		ad, err := netlink.NewAttributeDecoder(m.Data[4:]) // after the nfgenmsg header
		if err != nil {
			return 0, err
		}
		for ad.Next() {
			if ad.Type() != unix.NFTA_SET_ELEM_LIST_ELEMENTS {
				continue
			}
			list, err := netlink.NewAttributeDecoder(ad.Bytes())
			if err != nil {
				return 0, err
			}
			total += list.Len()
		}
		if err := ad.Err(); err != nil {
			return 0, err
		}
	}
	return total, nil
}

// Remove deletes the table with everything in it (sets, chain, and rules an operator put
// there). A table already gone is no error.
func (n *NFT) Remove(ctx context.Context) error {
	return n.do(ctx, func() error {
		n.conn.DelTable(n.table)
		err := n.conn.Flush()
		if err != nil && !isErrno(err, unix.ENOENT) {
			return n.explain("delete table inet "+n.o.Table, err)
		}
		return nil
	})
}

// Close closes the netlink connection; the table and its sets stay in the kernel.
func (n *NFT) Close() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.closed {
		return nil
	}
	n.closed = true
	if n.conn == nil {
		return nil
	}
	err := n.conn.CloseLasting()
	n.conn, n.nl = nil, nil
	return err
}

// isErrno reports whether err is errno, also where google/nftables flattened it into text.
func isErrno(err error, errno syscall.Errno) bool {
	return errors.Is(err, errno) || strings.Contains(err.Error(), errno.Error())
}

// explain wraps err from netlink with what the operator can do about it.
func (n *NFT) explain(what string, err error) error {
	var hint string
	switch {
	case errors.Is(err, os.ErrPermission), isErrno(err, unix.EPERM), isErrno(err, unix.EACCES):
		hint = capNetAdmin
	case isErrno(err, unix.ENOENT):
		return fmt.Errorf("firewall: nft: %s: table inet %s, a set or the chain is missing (deleted by 'nft flush ruleset', a firewall reload or another tool?): %w: %w", what, n.o.Table, ErrMissing, err)
	case isErrno(err, unix.EEXIST), isErrno(err, unix.EBUSY):
		hint = fmt.Sprintf("an object of the same name exists with another definition (look with 'nft list table inet %s'): delete it, e.g. 'nft delete table inet %s', or configure other names", n.o.Table, n.o.Table)
	case isErrno(err, unix.EPROTONOSUPPORT), isErrno(err, unix.EAFNOSUPPORT), isErrno(err, unix.EOPNOTSUPP):
		hint = fmt.Sprintf("the chain %s exists with another type, hook or priority (look with 'nft list table inet %s'; delete it), or the kernel lacks a part of nf_tables (modprobe nf_tables nft_set_hash; or use the ipset backend)", n.o.Chain, n.o.Table)
	case isErrno(err, unix.ENOBUFS), isErrno(err, unix.EMSGSIZE):
		hint = "a netlink buffer was too small for the batch: set a smaller MaxTransactionBytes, or raise net.core.wmem_max/rmem_max"
	case errors.Is(err, os.ErrDeadlineExceeded):
		hint = "netlink did not answer in time"
	default:
		return fmt.Errorf("firewall: nft: %s: %w", what, err)
	}
	return fmt.Errorf("firewall: nft: %s: %s: %w", what, hint, err)
}
