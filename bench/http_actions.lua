-- wrk script for bench/http_bench.py: one valid first action per request, never twice.
--
--   wrk -t T -c C -d S --latency -s bench/http_actions.lua URL PLAN MARKER T
--
-- PLAN is a file written by http_bench.py: its first line is the JSON request body, every
-- further line "<case id> <bearer token>" (the token of the case's subject). Thread k of T
-- takes the k-th contiguous slice of those lines, so no case is sent twice, and sends
--
--   POST /api/v1/cases/<id>/actions/submit   If-Match: "1"   Authorization: Bearer <token>
--
-- When its slice is used up a thread writes the file MARKER.<k> and stops; http_bench.py
-- then interrupts wrk (SIGINT: wrk stops every thread and reports as at the end of its
-- duration). Answers to requests still in flight when wrk stops are not awaited: done()
-- reports them as sent but not answered.
--
-- done() prints "BENCH <key> <value>" lines for http_bench.py: the totals of every thread
-- and wrk's latency percentiles (microseconds; wrk's own statistics, the ones --latency
-- prints).

local threads = {}

function setup(thread)
   thread:set("index", #threads)
   table.insert(threads, thread)
end

local function read_plan(path)
   local file = assert(io.open(path, "r"))
   local body = file:read("*l")
   local ids, tokens = {}, {}
   for line in file:lines() do
      local id, token = line:match("^(%d+) (%S+)$")
      if id then
         ids[#ids + 1] = id
         tokens[#tokens + 1] = token
      end
   end
   file:close()
   return body, ids, tokens
end

function init(args)
   -- args[0] is the URL; the script's own arguments follow it: PLAN MARKER THREADS.
   body, ids, tokens = read_plan(args[1])
   marker = args[2] .. "." .. index
   local size, nthreads = #ids, tonumber(args[3])
   first = math.floor(size * index / nthreads) + 1
   last = math.floor(size * (index + 1) / nthreads)
   nextpos = first
   -- wrk builds one request on thread 0 before the run only to check that it parses
   -- (script_verify_request); that one is built without taking a case off the slice.
   verifying = index == 0
   sent, answered, ok = 0, 0, 0
   statuses = {}  -- non-200 status -> count
   samples = {}   -- the first few non-200 answers, status and start of the body
   exhausted = false
end

local function build(pos)
   return wrk.format("POST", "/api/v1/cases/" .. ids[pos] .. "/actions/submit", {
      ["Host"] = wrk.headers["Host"],
      ["Authorization"] = "Bearer " .. tokens[pos],
      ["If-Match"] = '"1"',
      ["Content-Type"] = "application/json",
   }, body)
end

function request()
   if verifying then
      verifying = false
      return build(nextpos)
   end
   if nextpos > last then
      if not exhausted then
         exhausted = true
         local file = io.open(marker, "w")
         if file then
            file:write(tostring(sent), "\n")
            file:close()
         end
      end
      wrk.thread:stop()
      return ""  -- nothing is written; the thread's event loop ends after this turn
   end
   local req = build(nextpos)
   nextpos = nextpos + 1
   sent = sent + 1
   return req
end

function response(status, headers, resp_body)
   answered = answered + 1
   if status == 200 then
      ok = ok + 1
   else
      statuses[status] = (statuses[status] or 0) + 1
      if #samples < 5 then
         samples[#samples + 1] = status .. " " .. resp_body:sub(1, 300):gsub("%s+", " ")
      end
   end
end

function done(summary, latency, _requests)
   local total = { sent = 0, answered = 0, ok = 0 }
   local statuses_all, samples_all, exhausted_threads = {}, {}, 0
   for _, thread in ipairs(threads) do
      for key, _ in pairs(total) do
         total[key] = total[key] + thread:get(key)
      end
      for status, count in pairs(thread:get("statuses")) do
         statuses_all[status] = (statuses_all[status] or 0) + count
      end
      for _, sample in pairs(thread:get("samples")) do
         samples_all[#samples_all + 1] = sample
      end
      if thread:get("exhausted") then
         exhausted_threads = exhausted_threads + 1
      end
   end
   local out = {
      duration_us = summary.duration,
      requests = summary.requests,
      sent = total.sent,
      answered = total.answered,
      ok = total.ok,
      exhausted_threads = exhausted_threads,
      threads = #threads,
      connect_errors = summary.errors.connect,
      read_errors = summary.errors.read,
      write_errors = summary.errors.write,
      timeouts = summary.errors.timeout,
      latency_mean_us = latency.mean,
      latency_max_us = latency.max,
      p50_us = latency:percentile(50),
      p90_us = latency:percentile(90),
      p99_us = latency:percentile(99),
   }
   for key, value in pairs(out) do
      io.write(string.format("BENCH %s %d\n", key, value))
   end
   for status, count in pairs(statuses_all) do
      io.write(string.format("BENCH status_%d %d\n", status, count))
   end
   for _, sample in ipairs(samples_all) do
      io.write("BENCH sample ", sample, "\n")
   end
end
