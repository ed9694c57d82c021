// Package media relays the RTP and RTCP of bridged calls: one Session per
// call with two legs (A toward the phone, B toward Twilio), each with its own
// RTP/RTCP port pair from a PortPool. Packets are validated with pion/rtp and
// pion/rtcp, latched symmetrically to the peer's real source (NAT), counted
// per stream (packets, bytes, loss, RFC 3550 jitter, drops by reason) and
// passed through byte for byte. Silence longer than Settings.Timeout on a leg
// of an answered call that is not on hold fires the session's OnTimeout.
//
// The packet path runs in a few worker goroutines, each with its own epoll
// set, reading with recvfrom and sending with sendto, or in
// recvmmsg/sendmmsg batches when a socket holds more than one datagram
// (Linux only); all sockets of a session belong to one worker, so the only
// lock a packet takes is its session's, which only the control plane (SDP
// updates, stats) ever contends.
//
// media/sdp rewrites and reads the session descriptions; test/bench/relaytest
// holds the load generator and the rtpengine comparison used by `make bench`.
// See README.md for the call-setup order a B2BUA follows.
//
// It imports media/sdp and media/mmsg and nothing else of edgewise:
// signalling is the caller's business.
package media
