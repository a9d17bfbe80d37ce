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
void dt_node_id(dht_runner* r, char* out);
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

	// mu is held by every method that calls into the runner, and by Close to mark it closed,
	// so no call reaches a freed runner. The callback never takes it: OpenDHT calls back
	// holding a lock of its own that those calls may need.
	mu      sync.Mutex
	onValue atomic.Pointer[func([]byte)]

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
	if !d.live() {
		return
	}
	defer d.mu.Unlock()
	d.onValue.Store(&fn)
	d.token = C.dt_listen(d.r, &d.hash, C.uintptr_t(d.handle))
}

// live holds d.mu while the runner is open: a method called after Close does nothing
// rather than touch a freed runner. It returns false (and no lock) once closed.
func (d *runner) live() bool {
	d.mu.Lock()
	if d.closed {
		d.mu.Unlock()
		return false
	}
	return true
}

// Put stores data under the key (not permanent: it lives as OpenDHT values do, ten minutes).
func (d *runner) Put(data []byte) {
	if len(data) == 0 || !d.live() {
		return
	}
	defer d.mu.Unlock()
	p := C.CBytes(data)
	C.dt_put(d.r, &d.hash, (*C.uint8_t)(p), C.size_t(len(data)), C.uintptr_t(d.handle))
	C.free(p)
}

// NodeID is this node's id in the DHT, in hex.
func (d *runner) NodeID() string {
	if !d.live() {
		return ""
	}
	defer d.mu.Unlock()
	var buf [41]C.char
	C.dt_node_id(d.r, &buf[0])
	return C.GoString(&buf[0])
}

// Port is the UDP port the node is bound to.
func (d *runner) Port() int {
	if !d.live() {
		return 0
	}
	defer d.mu.Unlock()
	return int(C.dht_runner_get_bound_port(d.r, C.AF_INET))
}

// Nodes is the size of the routing table: good and dubious nodes, IPv4 and IPv6.
func (d *runner) Nodes() int {
	if !d.live() {
		return 0
	}
	defer d.mu.Unlock()
	return int(C.dt_known_nodes(d.r))
}

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
	d.closed = true
	d.onValue.Store(nil)
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
	if fn := d.onValue.Load(); fn != nil {
		(*fn)(data)
	}
}
