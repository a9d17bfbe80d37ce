package policy

import (
	"context"
	"log/slog"
	"net/netip"
	"strconv"
	"time"

	"github.com/dialtrap/dialtrap/internal/event"
	"github.com/dialtrap/dialtrap/internal/hits"
	"github.com/dialtrap/dialtrap/internal/sip"
	"github.com/dialtrap/dialtrap/internal/store"
)

// outcome is the result of one decision.
type outcome uint8

const (
	allow      outcome = iota // neither number nor caller known-bad
	denyNumber                // the dialled number is known-bad
	denySource                // the caller's address is known-bad
	failed                    // the store could not answer: FailClosed says what to do
	invalid                   // the Request-URI is not one we can answer with a redirect
	nOutcomes
)

var outcomeNames = [nOutcomes]string{"allow", "deny_number", "deny_source", "error", "invalid"}

// verdict is a decision with what the Reason header says about it.
type verdict struct {
	outcome outcome
	number  string // the dialled number as looked up
	matched string // the stored number it matched (national match), or ""
	ip      netip.Addr
	count   int64
	agg     store.Aggregate // the entry that decided (its provenance, for the hit)
}

// decide looks up the dialled number and the caller's address. A known-bad number is
// reported first (the caller is then not looked up); a lookup error only decides when the
// other lookup found nothing bad.
func (a *Agent) decide(ctx context.Context, number string, callers []netip.Addr) verdict {
	var v verdict
	v.number = number
	var lookupErr error
	if number != "" && !a.cfg.NumberGuard.Protects(number) {
		matched, count, agg, err := a.badNumber(ctx, number)
		if err != nil {
			lookupErr = err
		} else if count > 0 {
			v.outcome, v.matched, v.count, v.agg = denyNumber, matched, count, agg
			return v
		}
	}
	for _, ip := range callers {
		if a.cfg.IPGuard.Protects(ip) {
			continue
		}
		count, agg, err := a.badIP(ctx, ip)
		if err != nil {
			lookupErr = err
			continue
		}
		if count > 0 {
			v.outcome, v.ip, v.count, v.agg = denySource, ip, count, agg
			return v
		}
	}
	if lookupErr != nil {
		a.warn.Warn("policy lookup failed; calls are "+a.failMode()+" until the store answers again",
			"err", lookupErr)
		v.outcome = failed
	}
	return v
}

func (a *Agent) failMode() string {
	if a.cfg.FailClosed {
		return "refused (--policy-fail-closed)"
	}
	return "let through (fail open)"
}

// eligible says whether an aggregate counts under Config.Source and VerifiedOnly, and its
// count, as the feeds select: seen here (local), here or by a trusted peer (trusted), or by
// anyone (all); and with a proven sighting from those sources when VerifiedOnly. The count
// compared with MinCount is every sighting, as the feeds' min_count is.
func (a *Agent) eligible(agg store.Aggregate) (count int64, ok bool) {
	var verified int64
	switch a.cfg.Source {
	case store.SourceLocal:
		if agg.Local == 0 {
			return 0, false
		}
		verified = agg.VerifiedLocal
	case store.SourceAll:
		verified = agg.Verified
	default:
		if agg.Local == 0 && agg.TrustedPeers == 0 {
			return 0, false
		}
		verified = agg.VerifiedLocal + agg.VerifiedTrusted
	}
	if agg.Count == 0 || (a.cfg.VerifiedOnly && verified == 0) {
		return 0, false
	}
	return agg.Count, true
}

// badNumber returns the stored number that makes n known-bad and its count (0: not bad).
// With National it sums the counts of every national match, as GET /numbers/{n} does;
// numbers the guard protects never count.
func (a *Agent) badNumber(ctx context.Context, n string) (matched string, count int64, best store.Aggregate, err error) {
	if !a.cfg.National || !event.ValidNumber(n) {
		agg, ok, err := a.cfg.Lookups.Number(ctx, n)
		if err != nil || !ok {
			return "", 0, agg, err
		}
		c, ok := a.eligible(agg)
		if !ok || c < a.cfg.MinCount {
			return "", 0, agg, nil
		}
		return n, c, agg, nil
	}
	aggs, err := a.cfg.Lookups.MatchNumbers(ctx, n)
	if err != nil {
		return "", 0, best, err
	}
	var total, most int64
	for _, agg := range aggs {
		if agg.Key != n && a.cfg.NumberGuard.Protects(agg.Key) {
			continue
		}
		c, ok := a.eligible(agg)
		if !ok {
			continue
		}
		total += c
		if c > most || matched == "" {
			matched, most, best = agg.Key, c, agg
		}
	}
	if total == 0 || total < a.cfg.MinCount {
		return "", 0, best, nil
	}
	return matched, total, best, nil
}

func (a *Agent) badIP(ctx context.Context, ip netip.Addr) (int64, store.Aggregate, error) {
	agg, ok, err := a.cfg.Lookups.IP(ctx, addrString(ip))
	if err != nil || !ok {
		return 0, agg, err
	}
	c, ok := a.eligible(agg)
	if !ok || c < a.cfg.MinCount {
		return 0, agg, nil
	}
	return c, agg, nil
}

// maxCallers bounds the addresses one request may make us look up.
const maxCallers = maxCallerHeaders + maxViaAddrs

// callerAddrs returns the caller's addresses: the last caller headers that hold an IP (a
// proxy appends its own after any the caller forged), and every address the Via below the
// trusted proxies' names (its received=, which the first proxy adds when the caller's
// sent-by was not where the request came from, and its sent-by). All are checked, so a
// value the caller forged can only add to what is checked. Never the packet's sender: that
// is the PBX or proxy asking.
func (a *Agent) callerAddrs(m *sip.Message, sc *scan, buf *[maxCallers]netip.Addr) []netip.Addr {
	out := buf[:0]
	n := min(sc.ncallers, maxCallerHeaders)
	for i := range n {
		if ip, ok := parseIP(sc.callers[(sc.ncallers-n+i)%maxCallerHeaders]); ok {
			out = append(out, ip)
		}
	}
	if v, ok := nthVia(m.Via[:m.NVia], a.cfg.TrustedHops); ok {
		out = viaAddrs(out, v)
	}
	return out
}

// handle answers one message from src: it appends the reply to out and returns it with the
// address to send it to (UDP), or returns nil when nothing is to be sent.
func (a *Agent) handle(raw []byte, src netip.AddrPort, udp bool, out []byte) ([]byte, netip.AddrPort) {
	start := time.Now()
	m := sip.Parse(raw)
	switch m.Kind {
	case sip.Response:
		a.st.dropped[dropResponse].Add(1)
		return nil, src
	case sip.Garbage:
		a.st.dropped[dropUnparsable].Add(1)
		return nil, src
	}
	sc := scanHeaders(raw, a.cfg.CallerHeader)
	if m.NVia == 0 || sc.vias > sip.MaxVia || m.From == nil || m.To == nil || m.CallID == nil || m.CSeq == nil {
		// Without these no reply can find its way back or be matched to the request.
		a.st.dropped[dropUnparsable].Add(1)
		return nil, src
	}
	r := reply{m: &m, src: src, udp: udp}
	method := string(m.Method) // no allocation: compared, not kept
	a.st.countMethod(method)
	switch method {
	case "ACK":
		return nil, src // the answer to our final response: nothing to say
	case "CANCEL":
		return r.build(out, 200, "OK"), r.dest()
	case "INVITE", "MESSAGE", "OPTIONS":
	default:
		return r.build(out, 405, "Method Not Allowed"), r.dest()
	}
	uri := m.RequestURI
	if !uriChars(uri) {
		a.st.decisions[invalid].Add(1)
		return r.build(out, 400, "Bad Request"), r.dest()
	}
	if !hasSchemePrefix(uri) {
		a.st.decisions[invalid].Add(1)
		return r.build(out, 416, "Unsupported URI Scheme"), r.dest()
	}
	user := sip.UserPart(uri)
	if method == "OPTIONS" && len(user) == 0 {
		// An OPTIONS to the agent itself is a keep-alive ping (Kamailio's dispatcher sends them).
		return r.build(out, 200, "OK"), r.dest()
	}
	var number string
	if len(user) > 0 {
		number = dialled(user)
	}
	var cbuf [maxCallers]netip.Addr
	callers := a.callerAddrs(&m, &sc, &cbuf)
	ctx, cancel := context.WithTimeout(context.Background(), a.cfg.LookupTimeout)
	v := a.decide(ctx, number, callers)
	cancel()
	a.st.decisions[v.outcome].Add(1)
	out = a.respond(&r, out, v)
	a.st.latency.record(time.Since(start))
	if v.outcome == denyNumber || v.outcome == denySource {
		a.logDeny(v, method)
		if a.cfg.Hit != nil {
			a.cfg.Hit(hitOf(v, src))
		}
	}
	return out, r.dest()
}

// hitOf is the hit a refusal records: the number or caller that decided it.
func hitOf(v verdict, src netip.AddrPort) hits.Hit {
	h := hits.Hit{Kind: hits.KindNumber, Value: v.number, Matched: v.matched, SeenCount: v.count,
		SeenLocally: v.agg.Local > 0, SeenByPeers: v.agg.Peers, SeenByTrustedPeers: v.agg.TrustedPeers,
		SeenLast: v.agg.LastSeen, Client: src.Addr().Unmap().String(), Source: hits.SourcePolicy}
	if v.outcome == denySource {
		h.Kind, h.Value = hits.KindIP, addrString(v.ip)
		h.Matched = h.Value
	}
	return h
}

func (a *Agent) logDeny(v verdict, method string) {
	if !a.log.Enabled(context.Background(), slog.LevelDebug) { // per-call lines are debug only
		return
	}
	a.log.Debug("policy refused a call", "method", method, "decision", outcomeNames[v.outcome],
		"number", v.number, "matched", v.matched, "caller", v.ip, "count", v.count)
}

// respond builds the reply a verdict calls for.
func (a *Agent) respond(r *reply, out []byte, v verdict) []byte {
	ans := answer{code: 302, phrase: "Moved Temporarily", contact: r.m.RequestURI, v: v, failClosed: a.cfg.FailClosed}
	switch {
	case v.outcome == allow:
		ans.decision = decisionAllow
		return r.write(out, &ans)
	case v.outcome == failed && !a.cfg.FailClosed:
		ans.decision, ans.cause = decisionError, 0
		return r.write(out, &ans)
	}
	ans.decision, ans.cause = decisionHeader(v.outcome), a.reasonCause()
	switch {
	case a.cfg.DenyURI != "":
		ans.contact = a.denyURI
	case a.cfg.Deny == 404:
		ans.code, ans.phrase, ans.contact = 404, "Not Found", nil
	default:
		ans.code, ans.phrase, ans.contact = 403, "Forbidden", nil
	}
	return r.write(out, &ans)
}

// reasonCause is the cause of the Reason header on a refusal: the status a refusal has, or
// 403 for a redirect to the IVR (the call was forbidden; the IVR only says so).
func (a *Agent) reasonCause() int {
	if a.cfg.DenyURI != "" {
		return 403
	}
	return a.cfg.Deny
}

var (
	decisionAllow = []byte("allow")
	decisionError = []byte("error")
)

func decisionHeader(o outcome) []byte {
	switch o {
	case denyNumber:
		return []byte("deny_number")
	case denySource:
		return []byte("deny_source")
	}
	return decisionError
}

// appendReasonText writes what the Reason header's text says, from values that passed
// through safeText: no quote, backslash or control character can reach the header.
func appendReasonText(b []byte, v verdict, failClosed bool) []byte {
	b = append(b, "dialtrap: "...)
	switch v.outcome {
	case denyNumber:
		b = append(b, "number "...)
		b = appendSafe(b, v.number)
		if v.matched != "" && v.matched != v.number {
			b = append(b, " matches known-bad "...)
			b = appendSafe(b, v.matched)
		} else {
			b = append(b, " is known-bad"...)
		}
	case denySource:
		b = append(b, "caller "...)
		b = v.ip.AppendTo(b)
		b = append(b, " is known-bad"...)
	case failed:
		if failClosed {
			return append(b, "lookup failed, call refused (fail closed)"...)
		}
		return append(b, "lookup failed, call let through (fail open)"...)
	}
	b = append(b, " ("...)
	b = strconv.AppendInt(b, v.count, 10)
	if v.count == 1 {
		return append(b, " report)"...)
	}
	return append(b, " reports)"...)
}

// maxSafe is the most of one value the Reason text echoes.
const maxSafe = 32

// appendSafe appends s for a quoted string: characters a dialled number is made of pass,
// anything else becomes '?', and more than maxSafe bytes are cut with "...".
func appendSafe(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if i == maxSafe {
			return append(b, "..."...)
		}
		c := s[i]
		switch {
		case '0' <= c && c <= '9', 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z':
		case c == '+' || c == '*' || c == '#' || c == '.' || c == '-' || c == '_' || c == ':':
		default:
			c = '?'
		}
		b = append(b, c)
	}
	return b
}
