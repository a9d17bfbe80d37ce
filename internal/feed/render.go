package feed

import (
	"bufio"
	"context"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"math"
	"net/netip"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/dialtrap/dialtrap/internal/event"
	"github.com/dialtrap/dialtrap/internal/store"
)

// Pager reads a feed a page at a time (the store).
type Pager interface {
	FeedPage(ctx context.Context, l store.List, f store.FeedFilter, o store.FeedOrder, after store.FeedItem, limit int) ([]store.FeedItem, error)
}

// Formats of a feed.
const (
	Plain = "plain" // one key a line
	IPSet = "ipset" // an `ipset restore -exist` script
	NFT   = "nft"   // an `nft -f` script
	JSON  = "json"
	CSV   = "csv"
)

// Query is a validated feed request.
type Query struct {
	List   store.List
	Format string
	Filter store.FeedFilter
	// TTL, when set, keeps only keys last seen within it and gives each element a timeout of
	// what is left of it (last seen + TTL - now), so firewall sets expire them on their own.
	TTL        time.Duration
	Table      string // nft table (inet family)
	Set4, Set6 string // nft or ipset set names
	// Selection names what the filters select, as the client wrote them (a relative since
	// such as 24h stays the same text): a stream's cursor is valid only for the same one.
	Selection string
}

// MaxTTL bounds ttl: a year.
const MaxTTL = 366 * 24 * time.Hour

// setName is what a table or set name may be: short enough for ipset's 31 bytes with the
// ".new" of its swap, and never one of nft's words, which its parser would take as syntax.
var setName = regexp.MustCompile(`^[A-Za-z][A-Za-z0-9_-]{0,26}$`)

var nftWords = map[string]bool{"table": true, "set": true, "map": true, "chain": true, "rule": true, "element": true,
	"ip": true, "ip6": true, "inet": true, "arp": true, "bridge": true, "netdev": true, "add": true, "create": true,
	"delete": true, "destroy": true, "flush": true, "list": true, "insert": true, "replace": true, "reset": true,
	"type": true, "flags": true, "timeout": true, "size": true, "policy": true, "hook": true, "priority": true,
	"counter": true, "drop": true, "accept": true, "reject": true, "elements": true, "define": true, "include": true}

// ipsetMaxElem is the maxelem of the sets an ipset script creates: the same as the agent's
// (internal/firewall), since ipset restore -exist refuses a create that differs.
const ipsetMaxElem = 1 << 20

// MaxIPSetTimeout is the longest element timeout ipset takes, in seconds; a script with a
// longer one fails half-way.
const MaxIPSetTimeout = 2147483

// ParseQuery reads a feed's parameters: format, since, min_count, verified (only, the
// default, or any), source (trusted, the default: this node's and trusted peers'; local;
// all), ttl (a duration or seconds), and for scripts table, set4 and set6.
func ParseQuery(l store.List, v url.Values, now time.Time) (Query, error) {
	q := Query{List: l, Format: v.Get("format"), Filter: store.FeedFilter{Verified: true}}
	if q.Format == "" {
		q.Format = Plain
	}
	switch q.Format {
	case Plain, JSON, CSV:
	case IPSet, NFT:
		if l != store.IPAddresses {
			return q, fmt.Errorf("format %s is for addresses; numbers come as plain, json or csv", q.Format)
		}
	default:
		return q, fmt.Errorf("format must be plain, ipset, nft, json or csv, not %q", q.Format)
	}
	var err error
	if s := v.Get("since"); s != "" {
		if q.Filter.Since, err = event.ParseSince(s, now); err != nil {
			return q, err
		}
	}
	if s := v.Get("min_count"); s != "" {
		if q.Filter.MinCount, err = strconv.ParseInt(s, 10, 64); err != nil || q.Filter.MinCount < 0 {
			return q, fmt.Errorf("min_count must be a whole number, not %q", s)
		}
	}
	switch v.Get("verified") {
	case "", "only", "true", "1", "yes":
	case "any", "false", "0", "no":
		q.Filter.Verified = false
	default:
		return q, fmt.Errorf("verified must be only or any, not %q", v.Get("verified"))
	}
	switch v.Get("source") {
	case "", "trusted":
	case "local":
		q.Filter.Source = store.SourceLocal
	case "all":
		q.Filter.Source = store.SourceAll
	default:
		return q, fmt.Errorf("source must be local, trusted or all, not %q", v.Get("source"))
	}
	if s := v.Get("ttl"); s != "" {
		if q.TTL, err = parseTTL(s); err != nil {
			return q, err
		}
	}
	q.Selection = fmt.Sprintf("since=%s&min_count=%d&verified=%t&source=%d&ttl=%d",
		v.Get("since"), q.Filter.MinCount, q.Filter.Verified, q.Filter.Source, q.TTL)
	q.Table, q.Set4, q.Set6 = v.Get("table"), v.Get("set4"), v.Get("set6")
	def4, def6 := "blocklist4", "blocklist6"
	if q.Format == IPSet {
		def4, def6 = "dialtrap4", "dialtrap6"
	}
	for _, p := range []struct {
		v   *string
		def string
	}{{&q.Table, "dialtrap"}, {&q.Set4, def4}, {&q.Set6, def6}} {
		if *p.v == "" {
			*p.v = p.def
		}
		if !setName.MatchString(*p.v) || nftWords[strings.ToLower(*p.v)] {
			return q, fmt.Errorf("table and set names are a letter then up to 26 letters, digits, _ or -, and no nft keyword, not %q", *p.v)
		}
	}
	if q.Set4 == q.Set6 {
		return q, fmt.Errorf("set4 and set6 must differ (both %q)", q.Set4)
	}
	return q, nil
}

// parseTTL reads a duration ("24h", "90m") or whole seconds; 0 means no expiry.
func parseTTL(s string) (time.Duration, error) {
	d, err := time.ParseDuration(s)
	if err != nil {
		n, nerr := strconv.ParseInt(s, 10, 64)
		if nerr != nil || n > int64(MaxTTL/time.Second) {
			return 0, fmt.Errorf("ttl must be a duration such as 24h or whole seconds, not %q", s)
		}
		d = time.Duration(n) * time.Second
	}
	if d < 0 || d > MaxTTL {
		return 0, fmt.Errorf("ttl must be from 0 to %s, not %q", MaxTTL, s)
	}
	return d, nil
}

// Live returns the filter with the TTL's window applied: only keys last seen within it.
func (q Query) Live(now time.Time) store.FeedFilter {
	f := q.Filter
	if q.TTL > 0 {
		f.Since = max(f.Since, event.FormatTime(now.Add(-q.TTL)))
	}
	return f
}

// Timeout is what is left of a key's TTL at now, rounded up to whole seconds (at least 1);
// 0 when there is no TTL.
func (q Query) Timeout(lastSeen string, now time.Time) time.Duration {
	if q.TTL <= 0 {
		return 0
	}
	t, err := event.ParseTime(lastSeen)
	if err != nil {
		return q.TTL
	}
	// A key stamped ahead of the clock (a peer's or an import's) gets no more than the TTL.
	left := min(t.Add(q.TTL).Sub(now), q.TTL)
	return max(time.Duration(math.Ceil(left.Seconds()))*time.Second, time.Second)
}

// Guards are the never-block lists a feed applies.
type Guards struct {
	IPs     *IPGuard
	Numbers *NumberGuard
}

// allowed returns the key as a feed writes it, if it may be in one: a number as stored (only
// digits pass), an address in its canonical form, parsed anew, so that nothing but an address
// ever reaches a firewall script, whatever a database row holds.
func (g Guards) allowed(l store.List, key string) (string, bool) {
	if l == store.CalledNumbers {
		return key, !g.Numbers.Protects(key)
	}
	a, err := netip.ParseAddr(key)
	if err != nil || a.Zone() != "" || a.Is4In6() || g.IPs.Protects(a) {
		return "", false
	}
	if s := a.String(); s != key {
		return s, true
	}
	return key, true
}

// ContentType is the media type of a format.
func ContentType(format string) string {
	switch format {
	case JSON:
		return "application/json"
	case CSV:
		return "text/csv; charset=utf-8"
	default:
		return "text/plain; charset=utf-8"
	}
}

// pageSize is how many keys are read at a time (each page is one short read transaction).
const pageSize = 2000

// Render writes the feed q selects to w in its format, reading the store a page at a time;
// progress, when set, is called after each page (the API extends its write deadline).
func Render(ctx context.Context, w io.Writer, src Pager, q Query, g Guards, now time.Time, progress func()) error {
	bw := bufio.NewWriterSize(w, 64<<10)
	r := newRenderer(bw, q)
	f := q.Live(now)
	f.KeysOnly = q.Format == Plain || q.Format == IPSet || q.Format == NFT
	var after store.FeedItem
	for {
		page, err := src.FeedPage(ctx, q.List, f, store.ByKey, after, pageSize)
		if err != nil {
			return err
		}
		for _, it := range page {
			if key, ok := g.allowed(q.List, it.Key); ok {
				it.Key = key
				r.item(it, q.Timeout(it.LastSeen, now))
			}
		}
		if len(page) < pageSize {
			break
		}
		after = page[len(page)-1]
		if progress != nil {
			progress()
		}
	}
	r.end()
	if r.err != nil {
		return r.err
	}
	return bw.Flush()
}

// nftBatch is how many elements one nft `add element` statement carries.
const nftBatch = 512

type renderer struct {
	w        *bufio.Writer
	q        Query
	csv      *csv.Writer
	n        int
	v4, v6   []string // nft: elements waiting for their statement
	scratch  []byte
	err      error
	keyName  string
	listName string
}

func newRenderer(w *bufio.Writer, q Query) *renderer {
	r := &renderer{w: w, q: q, keyName: "ip_address", listName: "ip_addresses"}
	if q.List == store.CalledNumbers {
		r.keyName, r.listName = "called_number", "called_numbers"
	}
	switch q.Format {
	case IPSet:
		// The new list fills sets of its own, swapped in at the end: ipset restore stops at
		// its first failing line, and the sets in use must never be left half-filled.
		for _, s := range []struct{ name, family string }{{q.Set4, "inet"}, {q.Set6, "inet6"}} {
			fmt.Fprintf(w, "create %s hash:ip family %s hashsize 1024 maxelem %d timeout 0\n", s.name, s.family, ipsetMaxElem)
			fmt.Fprintf(w, "create %s.new hash:ip family %s hashsize 1024 maxelem %d timeout 0\nflush %s.new\n", s.name, s.family, ipsetMaxElem, s.name)
		}
	case NFT:
		// Declaring the table and sets creates them if missing; the flushes then make the
		// script a whole replacement, applied by nft -f in one transaction.
		fmt.Fprintf(w, "table inet %s {\n\tset %s { type ipv4_addr; flags timeout; }\n\tset %s { type ipv6_addr; flags timeout; }\n}\n",
			q.Table, q.Set4, q.Set6)
		fmt.Fprintf(w, "flush set inet %s %s\nflush set inet %s %s\n", q.Table, q.Set4, q.Table, q.Set6)
	case JSON:
		fmt.Fprintf(w, "{\"%s\": [", r.listName)
	case CSV:
		r.csv = csv.NewWriter(w)
		r.csv.Write([]string{r.keyName, "seen_last", "seen_count", "verified_count", "timeout"})
	}
	return r
}

func (r *renderer) item(it store.FeedItem, timeout time.Duration) {
	secs := int64(timeout / time.Second)
	w := r.w
	switch r.q.Format {
	case Plain:
		w.WriteString(it.Key)
		w.WriteByte('\n')
	case IPSet:
		set := r.q.Set4
		if a, err := netip.ParseAddr(it.Key); err == nil && a.Is6() {
			set = r.q.Set6
		}
		w.WriteString("add ")
		w.WriteString(set)
		w.WriteString(".new ")
		w.WriteString(it.Key)
		if secs > 0 {
			w.WriteString(" timeout ")
			w.Write(strconv.AppendInt(r.scratch[:0], min(secs, MaxIPSetTimeout), 10))
		}
		w.WriteByte('\n')
	case NFT:
		el := it.Key
		if secs > 0 {
			el += " timeout " + strconv.FormatInt(secs, 10) + "s"
		}
		if a, err := netip.ParseAddr(it.Key); err == nil && a.Is6() {
			if r.v6 = append(r.v6, el); len(r.v6) == nftBatch {
				r.flushNFT(r.q.Set6, &r.v6)
			}
		} else if r.v4 = append(r.v4, el); len(r.v4) == nftBatch {
			r.flushNFT(r.q.Set4, &r.v4)
		}
	case JSON:
		if r.n > 0 {
			w.WriteByte(',')
		}
		w.WriteString("\n  {\"" + r.keyName + "\": ")
		w.Write(strconv.AppendQuote(r.scratch[:0], it.Key)) // an IP or digits: no escapes differ from JSON's
		w.WriteString(", \"seen_last\": \"" + it.LastSeen + "\", \"seen_count\": \"")
		w.Write(strconv.AppendInt(r.scratch[:0], it.Count, 10))
		w.WriteString("\", \"verified_count\": ")
		w.Write(strconv.AppendInt(r.scratch[:0], it.Verified, 10))
		if secs > 0 {
			w.WriteString(", \"timeout\": ")
			w.Write(strconv.AppendInt(r.scratch[:0], secs, 10))
		}
		w.WriteByte('}')
	case CSV:
		t := ""
		if secs > 0 {
			t = strconv.FormatInt(secs, 10)
		}
		r.csv.Write([]string{it.Key, it.LastSeen, strconv.FormatInt(it.Count, 10), strconv.FormatInt(it.Verified, 10), t})
	}
	r.n++
}

func (r *renderer) flushNFT(set string, els *[]string) {
	if len(*els) == 0 {
		return
	}
	fmt.Fprintf(r.w, "add element inet %s %s { ", r.q.Table, set)
	for i, e := range *els {
		if i > 0 {
			r.w.WriteString(", ")
		}
		r.w.WriteString(e)
	}
	r.w.WriteString(" }\n")
	*els = (*els)[:0]
}

func (r *renderer) end() {
	switch r.q.Format {
	case IPSet:
		for _, s := range []string{r.q.Set4, r.q.Set6} {
			fmt.Fprintf(r.w, "swap %s.new %s\ndestroy %s.new\n", s, s, s)
		}
	case NFT:
		r.flushNFT(r.q.Set4, &r.v4)
		r.flushNFT(r.q.Set6, &r.v6)
	case JSON:
		if r.n > 0 {
			r.w.WriteString("\n")
		}
		r.w.WriteString("]}\n")
	case CSV:
		r.csv.Flush()
		if err := r.csv.Error(); err != nil {
			r.err = errors.Join(r.err, err)
		}
	}
}
