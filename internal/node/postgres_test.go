package node

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/dialtrap/dialtrap/internal/testutil"
	"github.com/dialtrap/dialtrap/internal/testutil/pgtest"
)

// Two nodes with --store on one PostgreSQL database share what they capture: a probe of
// each is counted once, and both APIs serve the sum; the start-up line names the database
// without its password.
func TestNodesShareAPostgreSQLStore(t *testing.T) {
	url := pgtest.Get(t).Database(t)
	url = strings.Replace(url, "postgres@", "postgres:s3cretPW@", 1) // trust auth ignores it
	a, logs := startNode(t, load(t, "-a", "--store", url))
	b, _ := startNode(t, load(t, "-a", "--store", url))
	probe(t, a.Addrs().SIPUDP, "127.0.0.50", "100")
	probe(t, b.Addrs().SIPUDP, "127.0.0.50", "100")
	for _, n := range []*Node{a, b} {
		testutil.Eventually(t, "each node serves both probes", 10*time.Second, func() bool {
			l, err := apiClient(n).IP(context.Background(), "127.0.0.50")
			return err == nil && l.Known && l.SeenCount == 2
		})
	}
	if s := logs.String(); strings.Contains(s, "s3cretPW") || !strings.Contains(s, "postgres://postgres:xxxxx@") {
		t.Errorf("start-up line names the store wrongly:\n%s", s)
	}
}
