//go:build opendht

// What the OpenDHT C API lacks and the bridge reports: the size of the routing table. The C
// API's dht_runner is the C++ dht::DhtRunner (opendht_c.cpp casts it both ways), so this
// asks the C++ object directly.

#include <opendht/dhtrunner.h>
#include <opendht/opendht_c.h>
#include <sys/socket.h>

extern "C" unsigned dt_known_nodes(dht_runner* r) {
    auto runner = reinterpret_cast<dht::DhtRunner*>(r);
    unsigned n = 0;
    for (int af : {AF_INET, AF_INET6}) {
        auto s = runner->getNodesStats(af);
        n += s.good_nodes + s.dubious_nodes;
    }
    return n;
}
