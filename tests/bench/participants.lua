-- wrk script for the registration rush: every request registers a different, VALID participant.
--
--   wrk -t2 -c32 -d12s --latency -s tests/bench/participants.lua <registrations URL> -- <block> <threads>
--
-- Why a script and not a Python client: the load generator must not be the bottleneck on a two-core
-- machine, and wrk's event loop in C with LuaJIT-built bodies costs a few microseconds per request.
--
-- Uniqueness (NIP and e-mail are unique per request across every thread and connection of a run, and
-- across runs): each request gets a participant number
--     n = block * BLOCK_SIZE + counter * threads + thread_id
-- where thread_id comes from setup() (0 .. threads-1), counter counts this thread's requests (one event
-- loop per thread, so no two requests of a thread share a counter value), and `block` is chosen by the
-- runner, a different one per wrk run into the same session (block 0 is the SQL pre-fill's, see
-- tests/bench/participants.py, which writes the same mapping in SQL and in Python for the tests).
--
-- From n: sequence = n % 999 + 1 (001-999), sex digit = (n // 999) % 2 + 1, and each pair of
-- (sex, sequence) cycles moves the birth date one day on from 1950-01-01; the appointment month is the
-- birth month twenty years later (at least birth year + 15, as the NIP rule wants). So 1,998 participants
-- share a birth date and no two share a NIP.
--
-- Status codes are counted per thread in response(); done() prints one line `BENCH-RESULT {json}` that
-- tests/bench/wrk.py parses: latency percentiles (microseconds), requests, duration, socket errors and
-- the count of every status code. A run with any non-2xx answer or socket error is invalid.

local BLOCK_SIZE = 1000000
local PER_BIRTH_DATE = 1998
local EPOCH = os.time({ year = 1950, month = 1, day = 1, hour = 12 })

local threads = {}
local next_thread_id = 0

function setup(thread)
  thread:set("thread_id", next_thread_id)
  next_thread_id = next_thread_id + 1
  table.insert(threads, thread)
end

-- thread-local state (each wrk thread has its own Lua state)
local block, thread_count
counter = 0
statuses = {}

function init(args)
  block = tonumber(args[1] or "1")
  thread_count = tonumber(args[2] or "1")
end

local function nip_of(n)
  local sequence = n % 999 + 1
  local sex = math.floor(n / 999) % 2 + 1
  local born = os.date("*t", EPOCH + math.floor(n / PER_BIRTH_DATE) * 86400)
  return string.format(
    "%04d%02d%02d%04d%02d%d%03d", born.year, born.month, born.day, born.year + 20, born.month, sex, sequence
  )
end

function request()
  local n = block * BLOCK_SIZE + counter * thread_count + thread_id
  counter = counter + 1
  if counter * thread_count >= BLOCK_SIZE then
    error("participants.lua: a block holds 1,000,000 participants; use a shorter run")
  end
  local body = string.format(
    '{"name":"Peserta Bench %d","nip":"%s","email":"peserta.bench.%d@kaltaraprov.go.id",'
      .. '"phone":"0812%08d","opd":"Dinas Komunikasi dan Informatika"}',
    n, nip_of(n), n, n % 100000000
  )
  return wrk.format("POST", nil, { ["Content-Type"] = "application/json" }, body)
end

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
  local counts, generated = {}, 0
  for _, thread in ipairs(threads) do
    for status, count in pairs(thread:get("statuses")) do
      counts[status] = (counts[status] or 0) + count
    end
    generated = math.max(generated, thread:get("counter") * #threads)
  end
  local status_json = {}
  for status, count in pairs(counts) do
    table.insert(status_json, string.format('"%d":%d', status, count))
  end
  local e = summary.errors
  io.write(string.format(
    'BENCH-RESULT {"requests":%d,"duration_us":%d,"bytes":%d,"generated":%d,'
      .. '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},"statuses":{%s},'
      .. '"latency_us":{"min":%d,"mean":%.1f,"stdev":%.1f,"max":%d,"p50":%d,"p75":%d,"p90":%d,"p99":%d}}\n',
    summary.requests, summary.duration, summary.bytes, generated,
    e.connect, e.read, e.write, e.status, e.timeout, table.concat(status_json, ","),
    latency.min, latency.mean, latency.stdev, latency.max,
    latency:percentile(50), latency:percentile(75), latency:percentile(90), latency:percentile(99)
  ))
end
