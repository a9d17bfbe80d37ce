//go:build opendht

package opendht

import (
	"fmt"
	"testing"
	"time"

	"github.com/dialtrap/dialtrap/internal/testutil"
)

// A value dhtnode puts under bad_actors reaches Listen; a value put here is read back by
// dhtnode's get, under the key whose hash is KeyHash.
func TestRunnerWithDHTNode(t *testing.T) {
	peer := testutil.StartDHTNode(t, "")
	d, err := Open(0, []string{fmt.Sprintf("127.0.0.1:%d", peer.Port)})
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	got := make(chan []byte, 16)
	d.Listen(func(b []byte) { got <- b })
	if d.Port() == 0 || len(d.NodeID()) != 40 {
		t.Fatalf("port %d, node id %q", d.Port(), d.NodeID())
	}
	// The two must have met before a put reaches the listener.
	for deadline := time.Now().Add(15 * time.Second); d.Nodes() == 0; time.Sleep(100 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the node never met dhtnode")
		}
	}
	peer.Command("p " + Key + " hello-from-dhtnode")
	peer.WaitOutput("Using h(bad_actors) = "+KeyHash, 5*time.Second)
	select {
	case b := <-got:
		if string(b) != "hello-from-dhtnode" {
			t.Fatalf("listened value %q", b)
		}
	case <-time.After(15 * time.Second):
		t.Fatalf("no value arrived:\n%s", peer.Output())
	}
	d.Put([]byte("hello-from-dialtrap"))
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		if ok, _ := d.Puts(); ok > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the put was never confirmed")
		}
	}
	peer.Command("g " + Key)
	peer.WaitOutput(`"hello-from-dialtrap"`, 10*time.Second)
	t.Logf("node %s on port %d, %d nodes known", d.NodeID(), d.Port(), d.Nodes())
}
