package peer

import (
	"sync/atomic"
	"time"

	pubsub "github.com/libp2p/go-libp2p-pubsub"
	libpeer "github.com/libp2p/go-libp2p/core/peer"
	"github.com/libp2p/go-libp2p/core/protocol"
)

// drops counts the messages gossipsub itself drops for lack of room, which no validator
// sees: without it an overloaded node would lose events silently.
type drops struct {
	outbound   atomic.Uint64 // a message to a peer whose send queue was full
	validation atomic.Uint64 // a received message the validation queue had no room for
	delivery   atomic.Uint64 // an accepted message our reader was too slow to take
}

var _ pubsub.RawTracer = (*drops)(nil)

func (d *drops) DropRPC(rpc *pubsub.RPC, _ libpeer.ID) {
	d.outbound.Add(uint64(len(rpc.GetPublish())))
}

func (d *drops) RejectMessage(_ *pubsub.Message, reason string) {
	if reason == pubsub.RejectValidationQueueFull || reason == pubsub.RejectValidationThrottled {
		d.validation.Add(1)
	}
}

func (d *drops) UndeliverableMessage(*pubsub.Message) { d.delivery.Add(1) }

func (*drops) OnNewOutboundStream(libpeer.ID, protocol.ID)             {}
func (*drops) OnClosedOutboundStream(libpeer.ID)                       {}
func (*drops) Join(string)                                             {}
func (*drops) Leave(string)                                            {}
func (*drops) Graft(libpeer.ID, string)                                {}
func (*drops) Prune(libpeer.ID, string)                                {}
func (*drops) ValidateMessage(*pubsub.Message)                         {}
func (*drops) DeliverMessage(*pubsub.Message)                          {}
func (*drops) DuplicateMessage(*pubsub.Message)                        {}
func (*drops) ThrottlePeer(libpeer.ID)                                 {}
func (*drops) RecvRPC(*pubsub.RPC)                                     {}
func (*drops) SendRPC(*pubsub.RPC, libpeer.ID)                         {}
func (*drops) SendRPCCompleted(*pubsub.RPC, libpeer.ID, time.Duration) {}
