"""EXPERIMENT (issue 16, branch split; reverted): alternate base / split relay: CPU per message
(relay + its children, utime+stime from /proc) and delivered msg/s. Run with PYTHONPATH=. and
REPS=N; --outbound adds the 200-reply outbound scenario."""
import json, os, sys, time, asyncio, secrets, shutil, tempfile
from pathlib import Path
from benchmarks import relay_bench as rb
from benchmarks.loadgen import Target, run_load

TCK = os.sysconf("SC_CLK_TCK")

def cpu(pid):
    total = 0
    pids = [pid]
    try:
        pids += [int(x) for x in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        pass
    parts = {}
    for p in pids:
        try:
            f = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            parts[p] = (int(f[11]) + int(f[12])) / TCK
            parts[-p] = int(f[12]) / TCK
        except OSError:
            pass
    return parts

def diff(a, b):
    return {p: b[p] - a.get(p, 0.0) for p in b}

def run(lab, variant, scen):
    password = secrets.token_urlsafe(18)
    directory = Path(tempfile.mkdtemp(prefix="split-m-"))
    prof = rb.write_relay_profile(directory, lab.state, password, 600)
    env = {"SMTPCONN_DELIVERY_PROCESS": "1"} if variant == "split" else {}
    relay = rb.start_relay(prof, lab.state, extra_env=env)
    time.sleep(1.5)
    out = []
    try:
        ctx = rb.client_context(Path(lab.state.ca_file))
        t = Target("127.0.0.1", relay.inbound_port, ctx, rb.SUPPORT, password, rb.CUSTOMER, rb.SUPPORT)
        # warm-up
        asyncio.run(run_load(t, messages=20, senders=2, per_session=10))
        rb.wait_count(relay.sink_dir, 20, 30)
        for name, senders, per, n in scen:
            before_n = rb.count_messages(relay.sink_dir)
            c0 = cpu(relay.proc.pid); lg0 = os.times()
            res = asyncio.run(run_load(t, messages=n, senders=senders, per_session=per))
            at = rb.wait_count(relay.sink_dir, before_n + res.sent, 120)
            c1 = cpu(relay.proc.pid); lg1 = os.times()
            d = diff(c0, c1)
            tot = sum(v for k, v in d.items() if k > 0)
            out.append(dict(variant=variant, scen=name, sent=res.sent, errors=len(res.errors),
                cpu_ms_per_msg=round(tot * 1000 / n, 2),
                per_proc_ms=[round(v * 1000 / n, 2) for k, v in d.items() if k > 0], sys_ms=[round(v * 1000 / n, 2) for k, v in d.items() if k < 0],
                accepted=round(res.sent / res.wall, 1), delivered=round(n / (at - res.started_at), 1) if at else None,
                loadgen_ms_per_msg=round(((lg1.user + lg1.system) - (lg0.user + lg0.system)) * 1000 / n, 2),
                load=round(os.getloadavg()[0],2), p50=round(sorted(res.latencies)[len(res.latencies)//2]*1000,1)))
            print(json.dumps(out[-1]), flush=True)
        if "--outbound" in sys.argv:
            import benchmarks.relay_bench as r2
            c0 = cpu(relay.proc.pid)
            o = rb.outbound(lab, relay, False)
            c1 = cpu(relay.proc.pid)
            d = diff(c0, c1)
            # the direct-to-postfix part doesn't use the relay; CPU relates to 200 replies
            out.append(dict(variant=variant, scen="outbound200", cpu_ms_per_msg=round(sum(v for k,v in d.items() if k>0)*1000/200, 2),
                per_proc_ms=[round(v*1000/200,2) for k,v in d.items() if k>0], sys_ms=[round(v*1000/200,2) for k,v in d.items() if k<0],
                delivered=o["smtpconn"]["delivered_per_s"], postfix=o["postfix_direct"]["delivered_per_s"], load=round(os.getloadavg()[0],2), p50=round(sorted(res.latencies)[len(res.latencies)//2]*1000,1)))
            print(json.dumps(out[-1]), flush=True)
        tail = [l for l in relay.log() if "error" in l.lower() or "Traceback" in l][-3:]
        if tail: print("LOG", tail, flush=True)
    finally:
        relay.stop()
        shutil.rmtree(directory, ignore_errors=True)
    return out

def main():
    from lab.lab import Lab
    reps = int(os.environ.get("REPS", "2"))
    scen = [("20x50", 20, 50, 1000), ("1x50", 1, 50, 300), ("20x1", 20, 1, 200)]
    with Lab() as lab:
        for r in range(reps):
            for v in ("base", "split"):
                run(lab, v, scen)

main()
