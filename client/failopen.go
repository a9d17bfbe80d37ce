package client

import (
	"context"
	"time"
)

// Verdict is the answer of a pre-call check that fails open.
type Verdict struct {
	// Known is true only when the node answered, within the budget, that the number (or the
	// address) is known-bad. Block or flag the call then; connect it otherwise.
	Known bool
	// Lookup is the node's answer when it gave one.
	Lookup Lookup
	// Err is why there is no answer (the budget ran out, the node is down, a refusal). The
	// verdict is then "unknown": the call goes through. Log it.
	Err error
	// Elapsed is how long the check took.
	Elapsed time.Duration
}

// CheckNumber is the pre-call check of a PBX or a rating engine: is the called number
// known-bad, answered within budget (e.g. 50 ms), and "unknown" when the node cannot say in
// time, is down, or refuses. It never blocks a call on dialtrap's failure (fail-open) and never
// takes longer than budget plus the time to abandon a request. opts are those of Number
// (WithMatch(MatchNational) to catch every dial-out form).
func (c *Client) CheckNumber(ctx context.Context, n string, budget time.Duration, opts ...NumberOption) Verdict {
	return c.check(ctx, budget, func(ctx context.Context) (Lookup, error) { return c.Number(ctx, n, opts...) })
}

// CheckIP is CheckNumber for a caller's address.
func (c *Client) CheckIP(ctx context.Context, ip string, budget time.Duration) Verdict {
	return c.check(ctx, budget, func(ctx context.Context) (Lookup, error) { return c.IP(ctx, ip) })
}

func (c *Client) check(ctx context.Context, budget time.Duration, ask func(context.Context) (Lookup, error)) Verdict {
	start := time.Now()
	ctx, cancel := context.WithTimeout(ctx, budget)
	defer cancel()
	l, err := ask(ctx)
	v := Verdict{Known: err == nil && l.Known, Lookup: l, Err: err, Elapsed: time.Since(start)}
	return v
}
