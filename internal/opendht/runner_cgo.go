//go:build opendht

package opendht

/*
#cgo pkg-config: opendht-c opendht
#cgo CXXFLAGS: -std=c++17
#include <stdlib.h>
#include <stdint.h>
#include <stdatomic.h>
#include <sys/socket.h>
#include <opendht/opendht_c.h>

dht_op_token* dt_listen(dht_runner* r, const dht_infohash* h, uintptr_t handle);
void dt_put(dht_runner* r, const dht_infohash* h, const uint8_t* data, size_t size, uintptr_t handle);
void dt_shutdown(dht_runner* r, atomic_int* done);
unsigned dt_known_nodes(dht_runner* r);
*/
import "C"

import (
	"errors"
	"fmt"
	"net"
	"runtime/cgo"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"
)

// Built says whether this binary can join an OpenDHT network (-tags opendht).
const Built = true

// runner is an OpenDHT node of the C library (libopendht-c, GPL-3), on its own threads.
type runner struct {
	r      *C.dht_runner
	hash   C.dht_infohash
	handle cgo.Handle
	token  *C.dht_op_token

	mu      sync.Mutex
	onValue func([]byte)

	putOK, putFailed atomic.Uint64
	closed           bool
}

// Open starts an OpenDHT node on port (0: any) and bootstraps it from hosts ("host:port").
// Nothing is listened to or put until Listen and Put.
func Open(port int, bootstrap []string) (DHT, error) {
	if port < 0 || port > 65535 {
		return nil, fmt.Errorf("OpenDHT port %d is out of range", port)
	}
	d := &runner{r: C.dht_runner_new()}
	if d.r == nil {
		return nil, errors.New("OpenDHT: cannot make a node")
	}
	if rc := C.dht_runner_run(d.r, C.in_port_t(port)); rc != 0 {
		C.dht_runner_delete(d.r)
		return nil, fmt.Errorf("OpenDHT: cannot listen on UDP port %d: %w (is another program, or --p2p-addr, on it?)", port, errnoErr(int(rc)))
	}
	key := C.CString(Key)
	C.dht_infohash_get_from_string(&d.hash, key)
	C.free(unsafe.Pointer(key))
	d.handle = cgo.NewHandle(d)
	for _, b := range bootstrap {
		host, port, err := net.SplitHostPort(b)
		if err != nil {
			d.Close()
			return nil, fmt.Errorf("--opendht-bootstrap %q: give host:port", b)
		}
		ch, cp := C.CString(host), C.CString(port)
		C.dht_runner_bootstrap(d.r, ch, cp)
		C.free(unsafe.Pointer(ch))
		C.free(unsafe.Pointer(cp))
	}
	return d, nil
}

func errnoErr(rc int) error {
	if rc < 0 {
		rc = -rc
	}
	return fmt.Errorf("error %d", rc)
}

// Listen calls fn with each value put under the key, from the runner's thread.
func (d *runner) Listen(fn func([]byte)) {
	d.mu.Lock()
	d.onValue = fn
	d.mu.Unlock()
	d.token = C.dt_listen(d.r, &d.hash, C.uintptr_t(d.handle))
}

// Put stores data under the key (not permanent: it lives as OpenDHT values do, ten minutes).
func (d *runner) Put(data []byte) {
	if len(data) == 0 {
		return
	}
	p := C.CBytes(data)
	C.dt_put(d.r, &d.hash, (*C.uint8_t)(p), C.size_t(len(data)), C.uintptr_t(d.handle))
	C.free(p)
}

// NodeID is this node's id in the DHT, in hex.
func (d *runner) NodeID() string {
	id := C.dht_runner_get_node_id(d.r)
	return C.GoString(C.dht_infohash_print(&id))
}

// Port is the UDP port the node is bound to.
func (d *runner) Port() int {
	return int(C.dht_runner_get_bound_port(d.r, C.AF_INET))
}

// Nodes is the size of the routing table: good and dubious nodes, IPv4 and IPv6.
func (d *runner) Nodes() int { return int(C.dt_known_nodes(d.r)) }

// Puts says how many puts the network confirmed and how many failed.
func (d *runner) Puts() (ok, failed uint64) { return d.putOK.Load(), d.putFailed.Load() }

// Close leaves the network: it stops listening, shuts the runner down (waiting up to 5 s for
// its threads) and frees it.
func (d *runner) Close() {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return
	}
	d.closed, d.onValue = true, nil
	d.mu.Unlock()
	if d.token != nil {
		C.dht_runner_cancel_listen(d.r, &d.hash, d.token)
		C.dht_op_token_delete(d.token)
	}
	done := (*C.atomic_int)(C.calloc(1, C.size_t(unsafe.Sizeof(C.atomic_int(0)))))
	C.dt_shutdown(d.r, done)
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if atomic.LoadInt32((*int32)(unsafe.Pointer(done))) != 0 {
			break
		}
	}
	C.dht_runner_delete(d.r)
	C.free(unsafe.Pointer(done))
	d.handle.Delete()
}

func (d *runner) value(data []byte) {
	d.mu.Lock()
	fn := d.onValue
	d.mu.Unlock()
	if fn != nil {
		fn(data)
	}
}
