// Package relaytest measures RTP relays side by side on loopback: a load
// generator (Run) that sets calls up over rtpengine's ng control protocol
// (NGClient: offer/answer/delete, bencode over UDP) and streams G.711-sized
// packets, drivers for the relays under test (Rtpengine, and Relayd, which is
// media.Relay behind ServeNG), and the benchmark Suite with its Markdown
// table. The same generator and the same control commands drive every relay.
//
// The generator uses raw non-blocking sockets outside Go's netpoller and
// polls them, so it costs the relay under test no wake-ups; latency is taken
// from the send stamp in each packet to the kernel's receive stamp
// (SO_TIMESTAMPNS), so polling does not inflate it. Every loop is bounded by
// the run's end time and by its context.
//
// With Suite.RelayCPU set, each relay runs on that one CPU, every thread
// of it from its first instruction (the fork inherits the mask; a Go relay
// sizes GOMAXPROCS from it, rtpengine gets --num-threads=1), and the
// generator on the other CPUs; each step then checks every thread's
// allowed CPUs and the CPU it last ran on. A step measures one core of
// relay, not a machine the relay shares with the generator. Each step
// also records the generator's own CPU and the datagrams dropped at its
// receive queues, so a step the generator could not drive is marked as
// its limit rather than the relay's.
package relaytest
