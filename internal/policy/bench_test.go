package policy

import (
	"net/netip"
	"strconv"
	"testing"
	"time"

	"github.com/dialtrap/dialtrap/internal/store/sqlite"
)

// BenchmarkDecide measures one decision in process: parse, lookups in a real SQLite store
// of 20,000 numbers and IPs (Bloom filters ready), reply. go run ./bench/policy measures the
// agent over the network against a bare responder.
func BenchmarkDecide(b *testing.B) {
	var known []sighting
	for i := range 20_000 {
		known = append(known, sighting{ip: "198.18." + strconv.Itoa(i>>8) + "." + strconv.Itoa(i&255),
			number: "00" + strconv.Itoa(4_600_000_000+7*i), count: 1, verified: true})
	}
	db := newStore(b, known)
	db.PrepareLookups()
	waitFilters(b, db)
	src := netip.MustParseAddrPort("127.0.0.1:5060")
	for _, c := range []struct {
		name     string
		national bool
		ruri     string
		caller   string
	}{
		{"clean/exact", false, "sip:009100000007@carrier", "100.64.0.1"},
		{"clean/national", true, "sip:009100000007@carrier", "100.64.0.1"},
		{"bad-number/exact", false, "sip:004600000070@carrier", "100.64.0.1"},
		{"bad-number/national", true, "sip:004600000070@carrier", "100.64.0.1"},
		{"bad-caller/exact", false, "sip:009100000007@carrier", "198.18.0.10"},
	} {
		b.Run(c.name, func(b *testing.B) {
			a, err := New(Config{Addr: "127.0.0.1:0", Lookups: db, National: c.national})
			if err != nil {
				b.Fatal(err)
			}
			msg := []byte(request("INVITE", c.ruri, 5060, "X-Dialtrap-Caller: "+c.caller))
			out := make([]byte, 0, 2048)
			b.ReportAllocs()
			for b.Loop() {
				out, _ = a.handle(msg, src, true, out[:0])
			}
			if len(out) == 0 {
				b.Fatal("no reply")
			}
		})
	}
}

// waitFilters waits until a miss is answered without SQLite (the Bloom filters are built in
// the background): until then a miss costs a query.
func waitFilters(b *testing.B, db *sqlite.Store) {
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		start := time.Now()
		for i := range 100 {
			_, _, _ = db.IP(b.Context(), "100.64.1."+strconv.Itoa(i))
		}
		if time.Since(start) < 500*time.Microsecond {
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
}
