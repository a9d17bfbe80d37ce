//go:build opendht

// C callbacks the OpenDHT runner calls on its own thread; each hands over to Go with the
// cgo handle it was given as user data.

#include <stdint.h>
#include <stdatomic.h>
#include <opendht/opendht_c.h>
#include "_cgo_export.h"

static bool dt_value_cb(const dht_value* v, bool expired, void* user) {
    if (expired) {
        return true; // a value timing out of the network is no new report
    }
    dht_data_view d = dht_value_get_data(v);
    dtValue((uintptr_t)user, (void*)d.data, (size_t)d.size);
    return true;
}

dht_op_token* dt_listen(dht_runner* r, const dht_infohash* h, uintptr_t handle) {
    return dht_runner_listen(r, h, dt_value_cb, NULL, (void*)handle);
}

static void dt_put_done(bool ok, void* user) {
    dtPutDone((uintptr_t)user, ok);
}

void dt_put(dht_runner* r, const dht_infohash* h, const uint8_t* data, size_t size, uintptr_t handle) {
    dht_value* v = dht_value_new(data, size);
    // As the reference's values are (dht_value_new_from_string): text, no trailing NUL.
    dht_value_set_user_type(v, "text/plain");
    dht_runner_put(r, h, v, dt_put_done, (void*)handle, false);
    dht_value_unref(v);
}

static void dt_shutdown_done(void* user) {
    atomic_store((atomic_int*)user, 1);
}

void dt_shutdown(dht_runner* r, atomic_int* done) {
    dht_runner_shutdown(r, dt_shutdown_done, done);
}

// dt_node_id copies the node's id in hex into out (41 bytes): dht_infohash_print writes into a
// buffer of the calling thread, so it is read on that thread, here.
void dt_node_id(dht_runner* r, char* out) {
    dht_infohash id = dht_runner_get_node_id(r);
    const char* s = dht_infohash_print(&id);
    size_t i = 0;
    for (; s && s[i] && i < 40; i++) {
        out[i] = s[i];
    }
    out[i] = 0;
}
