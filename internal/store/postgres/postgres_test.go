package postgres

import (
	"context"
	"testing"

	"github.com/dialtrap/dialtrap/internal/store/storetest"
	"github.com/dialtrap/dialtrap/internal/testutil/pgtest"
)

func TestMain(m *testing.M) { pgtest.Main(m) }

// open opens a store on a fresh database of the test binary's server.
func open(t testing.TB) *Store {
	t.Helper()
	s, err := Open(context.Background(), pgtest.Get(t).Database(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) storetest.Backend { return open(t) }, storetest.CountsWeights)
}
