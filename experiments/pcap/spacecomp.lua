-- Wireshark/tshark dissector for SpaceCoMP frames over TCP (LeoDOS header + SpaceCoMP messages).
--
--   tshark -X lua_script:experiments/pcap/spacecomp.lua -r FILE.pcap
--   tshark -X lua_script:experiments/pcap/spacecomp.lua -o tcp.reassemble_out_of_order:TRUE \
--          -r FILE.pcap -Y spacecomp -T fields -e spacecomp.op -e spacecomp.job_id
--
-- Frames that span segments are reassembled by Wireshark's TCP layer from the length
-- field.  If a capture holds out-of-order segments (loss, reordering netem), also pass
-- -o tcp.reassemble_out_of_order:TRUE (a TCP preference, off by default in 4.0; a Lua
-- script cannot set it), or such frames stay "TCP segment of a reassembled PDU".
--
-- The layout is node_app/protocol.py's; it is restated here because Wireshark cannot
-- import Python.  tests/test_pcap.py checks this file against frames protocol.py encodes.
--
--   frame:     length u32 | version u8 | op u8 | reserved u8 | job_id u16 | body | tag[32]
--              (length counts every byte after itself; tag: HMAC-SHA256 under the
--              testbed key, shown, not verified: the dissector has no key)
--   SubmitJob: 4 x f32 box (deg) | data_volume_bytes u64 | 4 x f32 factors | flags u8
--              | ext_version u8 | JSON
--   JSON ops:  ext_version u8 | JSON                 (Assign*, PhaseDone, JobResult, Error)
--   DataChunk: role u8 | kind u8 | flags u8 | reserved u8 | stream u16 | seq u32 | payload
--
-- Registered on TCP port 4700 (node_app.addressing.DEFAULT_PORT; a preference) and as a
-- heuristic on all TCP, so daemons on per-satellite ports are found as well.

local p = Proto("spacecomp", "SpaceCoMP (LeoDOS over TCP)")

local PROTOCOL_VERSION = 2
local MAX_FRAME = 16 * 1024 * 1024   -- protocol.DEFAULT_MAX_FRAME, bytes after the length
local TAG_BYTES = 32                 -- protocol.TAG_BYTES, the HMAC-SHA256 trailer
local OPS = { [0x00] = "SubmitJob", [0x01] = "AssignCollector", [0x02] = "AssignMapper",
              [0x03] = "AssignReducer", [0x04] = "PhaseDone", [0x05] = "JobResult",
              [0x10] = "DataChunk", [0x7F] = "Error" }
local ROLES = { [2] = "mapper", [3] = "reducer", [4] = "ground" }
local KINDS = { [0] = "records", [1] = "file_begin", [2] = "file_data", [3] = "file_end" }
local SOLVERS = { [0] = "hungarian", [1] = "lapjv" }

local f = {
  length   = ProtoField.uint32("spacecomp.length", "Frame length", base.DEC),
  version  = ProtoField.uint8("spacecomp.version", "Version", base.DEC),
  op       = ProtoField.uint8("spacecomp.op", "Opcode", base.HEX, OPS),
  reserved = ProtoField.uint8("spacecomp.reserved", "Reserved", base.HEX),
  job_id   = ProtoField.uint16("spacecomp.job_id", "Job id", base.DEC),
  ext_version = ProtoField.uint8("spacecomp.ext_version", "Extension version", base.DEC),
  json     = ProtoField.string("spacecomp.json", "JSON"),
  ul_lat   = ProtoField.float("spacecomp.submit.ul_lat", "Upper-left latitude (deg)"),
  ul_lon   = ProtoField.float("spacecomp.submit.ul_lon", "Upper-left longitude (deg)"),
  lr_lat   = ProtoField.float("spacecomp.submit.lr_lat", "Lower-right latitude (deg)"),
  lr_lon   = ProtoField.float("spacecomp.submit.lr_lon", "Lower-right longitude (deg)"),
  volume   = ProtoField.uint64("spacecomp.submit.data_volume_bytes", "Data volume (bytes)", base.DEC),
  mpf      = ProtoField.float("spacecomp.submit.map_processing_factor", "Map processing factor"),
  rpf      = ProtoField.float("spacecomp.submit.reduce_processing_factor", "Reduce processing factor"),
  mrf      = ProtoField.float("spacecomp.submit.map_reduction_factor", "Map reduction factor"),
  rrf      = ProtoField.float("spacecomp.submit.reduce_reduction_factor", "Reduce reduction factor"),
  sflags   = ProtoField.uint8("spacecomp.submit.flags", "Flags", base.HEX),
  ascending = ProtoField.bool("spacecomp.submit.ascending_only", "Ascending only", 8, nil, 0x01),
  solver   = ProtoField.uint8("spacecomp.submit.solver", "Solver", base.DEC, SOLVERS, 0x06),
  role     = ProtoField.uint8("spacecomp.chunk.role", "Receiving role", base.DEC, ROLES),
  kind     = ProtoField.uint8("spacecomp.chunk.kind", "Kind", base.DEC, KINDS),
  cflags   = ProtoField.uint8("spacecomp.chunk.flags", "Flags", base.HEX),
  cend     = ProtoField.bool("spacecomp.chunk.end", "End of stream", 8, nil, 0x01),
  creserved = ProtoField.uint8("spacecomp.chunk.reserved", "Reserved", base.HEX),
  stream   = ProtoField.uint16("spacecomp.chunk.stream", "Stream", base.DEC),
  seq      = ProtoField.uint32("spacecomp.chunk.seq", "Sequence", base.DEC),
  file_no  = ProtoField.uint16("spacecomp.chunk.file", "File number", base.DEC),
  file_name = ProtoField.string("spacecomp.chunk.file_name", "File name"),
  file_size = ProtoField.uint64("spacecomp.chunk.file_size", "File size (bytes)", base.DEC),
  payload  = ProtoField.bytes("spacecomp.chunk.payload", "Payload"),
  records  = ProtoField.string("spacecomp.chunk.records", "Records (JSON)"),
  tag      = ProtoField.bytes("spacecomp.tag", "HMAC-SHA256 tag"),
}
p.fields = f

local port_pref = Pref.uint("TCP port", 4700, "TCP port of the node daemons")
p.prefs.port = port_pref

-- Is there a plausible frame start at offset 0?  (length, version, known opcode)
local function looks_like_frame(tvb)
  if tvb:len() < 6 then return false end
  local length = tvb(0, 4):uint()
  return length >= 5 + TAG_BYTES and length <= MAX_FRAME and tvb(4, 1):uint() == PROTOCOL_VERSION
         and OPS[tvb(5, 1):uint()] ~= nil
end

local function get_len(tvb, pinfo, offset)
  return tvb(offset, 4):uint() + 4
end

local function json_body(tvb, t, off)
  if tvb:len() <= off then return end
  t:add(f.ext_version, tvb(off, 1))
  if tvb:len() > off + 1 then t:add(f.json, tvb(off + 1)) end
end

local function submit_body(tvb, t, off)
  if tvb:len() < off + 41 then return end
  local s = t:add(p, tvb(off, 41), "SubmitJob fixed part")
  local fields = { f.ul_lat, f.ul_lon, f.lr_lat, f.lr_lon }
  for i, fld in ipairs(fields) do s:add(fld, tvb(off + 4 * (i - 1), 4)) end
  s:add(f.volume, tvb(off + 16, 8))
  fields = { f.mpf, f.rpf, f.mrf, f.rrf }
  for i, fld in ipairs(fields) do s:add(fld, tvb(off + 24 + 4 * (i - 1), 4)) end
  local fl = s:add(f.sflags, tvb(off + 40, 1))
  fl:add(f.ascending, tvb(off + 40, 1))
  fl:add(f.solver, tvb(off + 40, 1))
  json_body(tvb, t, off + 41)
end

local function chunk_body(tvb, t, off)
  if tvb:len() < off + 10 then return end
  local c = t:add(p, tvb(off), "DataChunk")
  c:add(f.role, tvb(off, 1))
  local kind = tvb(off + 1, 1):uint()
  c:add(f.kind, tvb(off + 1, 1))
  c:add(f.cflags, tvb(off + 2, 1)):add(f.cend, tvb(off + 2, 1))
  c:add(f.creserved, tvb(off + 3, 1))
  c:add(f.stream, tvb(off + 4, 2))
  c:add(f.seq, tvb(off + 6, 4))
  local pay = off + 10
  if tvb:len() <= pay then return end
  if kind == 0 then
    c:add(f.records, tvb(pay))
  elseif tvb:len() >= pay + 2 then
    c:add(f.file_no, tvb(pay, 2))
    if kind == 1 and tvb:len() > pay + 2 then c:add(f.file_name, tvb(pay + 2))
    elseif kind == 3 and tvb:len() >= pay + 10 then c:add(f.file_size, tvb(pay + 2, 8))
    elseif kind == 2 and tvb:len() > pay + 2 then c:add(f.payload, tvb(pay + 2)) end
  end
end

-- One whole frame (dissect_tcp_pdus has already cut and reassembled it).
local function dissect_pdu(tvb, pinfo, tree)
  local op, job = tvb(5, 1):uint(), tvb(7, 2):uint()
  local name = OPS[op] or string.format("0x%02x", op)
  local summary = string.format("%s job=%d", name, job)
  if tostring(pinfo.cols.protocol) == "SpaceCoMP" then
    pinfo.cols.info:append(", " .. summary)   -- a second frame in this segment
  else
    pinfo.cols.protocol = "SpaceCoMP"
    pinfo.cols.info = summary
  end
  local t = tree:add(p, tvb(), string.format("SpaceCoMP %s, job %d, %d bytes", name, job, tvb:len()))
  t:add(f.length, tvb(0, 4))
  t:add(f.version, tvb(4, 1))
  t:add(f.op, tvb(5, 1))
  t:add(f.reserved, tvb(6, 1))
  t:add(f.job_id, tvb(7, 2))
  -- the body ends where the tag begins; the body dissectors see the message only
  local msg_end = math.max(9, tvb:len() - TAG_BYTES)
  local msg = tvb(0, msg_end):tvb()
  if op == 0x00 then submit_body(msg, t, 9)
  elseif op == 0x10 then chunk_body(msg, t, 9)
  else json_body(msg, t, 9) end
  if tvb:len() > msg_end then t:add(f.tag, tvb(msg_end)) end
  return tvb:len()
end

function p.dissector(tvb, pinfo, tree)
  dissect_tcp_pdus(tvb, tree, 4, get_len, dissect_pdu, true)
  return tvb:len()
end

local function heuristic(tvb, pinfo, tree)
  if not looks_like_frame(tvb) then return false end
  pinfo.conversation = p   -- later segments of this connection go straight to us
  p.dissector(tvb, pinfo, tree)
  return true
end

local current_port = 0
function p.init()
  local tcp = DissectorTable.get("tcp.port")
  if current_port ~= 0 then tcp:remove(current_port, p) end
  current_port = p.prefs.port
  tcp:add(current_port, p)
end

p:register_heuristic("tcp", heuristic)
