# The header frame in front of every data-plane payload on a transport (transport/frame.h).
# One frame, then the payload bytes; the receiver checks every field before it hands the
# payload to anyone: magic and version, the sender (a peer it knows), the epoch (the
# current membership), the tag (the one the message matched) and the byte count (the
# bytes that actually arrived).
@0xfa4d82c8ba0e5321;

$import "/capnp/c++.capnp".namespace("janus::wire");

struct FrameHeader {
  magic @0 :UInt32;     # 0x4A4E5346 ("JNSF"): not a frame otherwise
  version @1 :UInt16;   # 1
  flags @2 :UInt16;     # bit 0 "split": the payload follows as a second message
  sender @3 :UInt32;    # the sending endpoint's id in the deployment
  epoch @4 :UInt32;     # membership epoch the sender was in
  tag @5 :UInt64;       # transfer tag (LayerBatchKey-derived, TensorDesc.transferTag)
  bytes @6 :UInt64;     # payload bytes that follow the frame
  seq @7 :UInt64;       # per-endpoint send sequence number (diagnostics)
}
