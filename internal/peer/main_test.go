package peer

import (
	"testing"

	"go.uber.org/goleak"
)

// Every node a test starts is closed by it; what is left running afterwards is a leak, except
// the process-wide workers libp2p's dependencies start once and keep.
func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}
