package peer

import (
	"time"

	pubsub "github.com/libp2p/go-libp2p-pubsub"
	libpeer "github.com/libp2p/go-libp2p/core/peer"
)

// scoreParams make gossipsub's peer scoring punish junk: every message our validator rejects
// (bad signature, bad schema, out-of-window time) costs the peer that delivered it 100 points,
// decaying over about ten minutes. A few dozen rejects put a peer below the graylist threshold,
// after which its messages are ignored; its score recovers only if it stops. app adds what
// gossip cannot see: junk a peer served through catch-up.
func scoreParams(app func(libpeer.ID) float64) *pubsub.PeerScoreParams {
	return &pubsub.PeerScoreParams{
		Topics: map[string]*pubsub.TopicScoreParams{
			Topic: {
				TopicWeight:                    1,
				TimeInMeshQuantum:              time.Second,
				FirstMessageDeliveriesWeight:   1,
				FirstMessageDeliveriesDecay:    pubsub.ScoreParameterDecay(10 * time.Minute),
				FirstMessageDeliveriesCap:      50,
				InvalidMessageDeliveriesWeight: -100,
				InvalidMessageDeliveriesDecay:  pubsub.ScoreParameterDecay(10 * time.Minute),
			},
		},
		TopicScoreCap:               100,
		AppSpecificScore:            app,
		AppSpecificWeight:           1,
		IPColocationFactorThreshold: 64, // many honest nodes may share a NAT; loopback tests too
		BehaviourPenaltyWeight:      -10,
		BehaviourPenaltyDecay:       pubsub.ScoreParameterDecay(time.Hour),
		DecayInterval:               time.Second,
		DecayToZero:                 0.01,
		RetainScore:                 time.Hour,
	}
}

func scoreThresholds() *pubsub.PeerScoreThresholds {
	return &pubsub.PeerScoreThresholds{
		GossipThreshold:             -500,
		PublishThreshold:            -1000,
		GraylistThreshold:           -2500,
		AcceptPXThreshold:           10,
		OpportunisticGraftThreshold: 5,
	}
}
