"use strict";
// The run report's page: draws the data embedded by checkpoint/report.py (no network, no
// library). Sections: summary, timeline (SVG, one lane per worker slot), critical path,
// failures, DAG, slowest tasks and families, all tasks, and a details panel.
(function () {
  const D = JSON.parse(document.getElementById("report-data").textContent);
  const T = D.tasks;
  const N = T.label.length;
  const R = D.run;
  const FAM = D.families;
  const SVGNS = "http://www.w3.org/2000/svg";
  const critical = new Set(D.critical);

  // --- helpers ---------------------------------------------------------------------------

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "text") node.textContent = v;
      else if (k === "cls") node.className = v;
      else node.setAttribute(k, v === true ? "" : v);
    }
    for (const child of children) {
      if (child === null || child === undefined) continue;
      node.append(child instanceof Node ? child : String(child));
    }
    return node;
  }

  function sv(tag, attrs) {
    const node = document.createElementNS(SVGNS, tag);
    for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
    return node;
  }

  function num(n) {
    return String(n).replace(/\B(?=(\d{3})+(?!\d))/g, ",");
  }

  function plural(n, word) {
    return num(n) + " " + word + (n === 1 ? "" : "s");
  }

  function dur(s) {
    if (s === null || s === undefined) return "";
    if (s < 0.0005) return "<1ms";
    if (s < 0.9995) return (s * 1000).toFixed(0) + "ms";
    if (s < 60) return s.toFixed(s < 10 ? 2 : 1) + "s";
    const m = Math.floor(s / 60);
    if (m < 60) return m + "m" + String(Math.floor(s % 60)).padStart(2, "0") + "s";
    return Math.floor(m / 60) + "h" + String(m % 60).padStart(2, "0") + "m";
  }

  function size(n) {
    if (n === null || n === undefined) return "";
    let v = n;
    for (const unit of ["B", "KiB", "MiB", "GiB", "TiB"]) {
      if (v < 1024 || unit === "TiB") return unit === "B" ? v + " B" : v.toFixed(1) + " " + unit;
      v /= 1024;
    }
    return n + " B";
  }

  function when(epoch) {
    const d = new Date(epoch * 1000);
    const p = (x) => String(x).padStart(2, "0");
    return d.getFullYear() + "-" + p(d.getMonth() + 1) + "-" + p(d.getDate()) + " " +
      p(d.getHours()) + ":" + p(d.getMinutes()) + ":" + p(d.getSeconds());
  }

  function famOf(i) { return FAM[T.family[i]]; }

  function taskLink(i) {
    const a = el("a", { cls: "link", "data-task": i, href: "#task-" + T.id[i], text: T.label[i] });
    return a;
  }

  // Any element with data-task opens that task's details.
  document.addEventListener("click", (e) => {
    const a = e.target.closest("[data-task]");
    if (a && !a.closest("#timeline")) {
      e.preventDefault();
      select(Number(a.dataset.task));
    }
  });

  // --- header and summary ----------------------------------------------------------------

  function header() {
    document.getElementById("title").textContent = D.title;
    const status = document.getElementById("status");
    status.textContent = R.status;
    status.className = "badge " + R.status;
    const parts = ["started " + when(R.started), "took " + dur(R.wall)];
    if (R.host) parts.push("on " + R.host);
    document.getElementById("subtitle").textContent = parts.join(" · ");
  }

  function summary() {
    const box = document.getElementById("summary");
    const c = R.counts;
    const card = (label, value, cls, small) => box.append(el("div", { cls: "card " + (cls || "") },
      el("div", { cls: "label", text: label }), el("div", { cls: "value" + (small ? " small" : ""), text: value })));
    card("targets", R.targets.join(", ") || "-", "", true);
    card("tasks in the DAG", num(R.total));
    card("ran", num(c.ran));
    card("reused", num(c.reused + c.kept));
    if (c.kept) card("kept (same inputs)", num(c.kept));
    card("failed", num(c.failed), c.failed ? "failed" : "");
    card("skipped", num(c.skipped), c.skipped ? "failed" : "");
    if (c["not run"]) card("not run (stopped)", num(c["not run"]));
    card("wall time", dur(R.wall));
    card("planning", dur(Math.max(0, R.planned - R.start)));
    const ex = (R.executor || "?") + (R.workers ? ", " + plural(R.workers, "worker") : "");
    card("executor", ex, "", true);
    card("machine", [R.host, R.system, R.cpus ? plural(R.cpus, "CPU") : ""].filter(Boolean).join(" · "), "", true);
    card("software", "checkpoint " + R.version + " · Python " + R.python, "", true);
  }

  // --- timeline --------------------------------------------------------------------------

  const TL = {
    gutter: 150, axis: 24, laneH: 20, pad: 8,
    v0: 0, v1: 1, full: [0, 1], bars: [], svg: null, width: 800, backgrounds: [],
  };

  function timeline() {
    const box = document.getElementById("timeline");
    const lanes = D.lanes;
    const timed = [];
    for (let i = 0; i < N; i++) if (T.lane[i] >= 0) timed.push(i);
    TL.full = [Math.min(R.start, 0), Math.max(R.end, 1e-6)];
    const span = TL.full[1] - TL.full[0];
    TL.full = [TL.full[0] - span * 0.01, TL.full[1] + span * 0.01];
    [TL.v0, TL.v1] = TL.full;
    TL.width = Math.max(400, box.clientWidth || 800);
    const height = TL.axis + Math.max(1, lanes.length) * TL.laneH + TL.pad;
    const svg = TL.svg = sv("svg", { width: TL.width, height: height, id: "timeline-svg",
      class: "show-critical", role: "img", "aria-label": "Timeline of the tasks that ran" });
    const defs = sv("defs");
    const hatch = sv("pattern", { id: "failed-hatch", width: 6, height: 6, patternUnits: "userSpaceOnUse",
      patternTransform: "rotate(45)" });
    hatch.append(sv("rect", { width: 6, height: 6, fill: "#f5b7b1" }), sv("rect", { width: 3, height: 6, fill: "#cf222e" }));
    const clip = sv("clipPath", { id: "plot-clip" });
    clip.append(sv("rect", { x: TL.gutter, y: 0, width: TL.width - TL.gutter, height: height }));
    TL.clip = clip.firstChild;
    defs.append(hatch, clip);
    svg.append(defs);
    for (let l = 0; l < lanes.length; l++) {
      const y = TL.axis + l * TL.laneH;
      const bg = sv("rect", { class: "lane-bg" + (l % 2 ? " odd" : ""), x: 0, y: y, width: TL.width, height: TL.laneH });
      TL.backgrounds.push(bg);
      svg.append(bg);
      const label = sv("text", { class: "lane-label", x: 6, y: y + TL.laneH / 2 + 4 });
      label.textContent = lanes[l].length > 22 ? lanes[l].slice(0, 21) + "…" : lanes[l];
      const title = sv("title");
      title.textContent = lanes[l];
      label.append(title);
      svg.append(label);
    }
    TL.axisG = sv("g", { class: "axis" });
    svg.append(TL.axisG);
    const plot = sv("g", { "clip-path": "url(#plot-clip)" });
    TL.planning = sv("rect", { class: "planning", y: TL.axis, height: Math.max(1, lanes.length) * TL.laneH });
    TL.planningLabel = sv("text", { class: "planning-label", y: TL.axis + 12 });
    TL.planningLabel.textContent = "planning";
    plot.append(TL.planning, TL.planningLabel);
    const bars = sv("g", { id: "bars" });
    // Critical bars last, so that their outline is drawn over their neighbours.
    timed.sort((a, b) => (critical.has(a) ? 1 : 0) - (critical.has(b) ? 1 : 0));
    for (const i of timed) {
      const failed = T.state[i] === "failed";
      const bar = sv("rect", {
        class: "bar" + (failed ? " failed" : "") + (critical.has(i) ? " crit" : ""),
        "data-i": i, y: TL.axis + T.lane[i] * TL.laneH + 2, height: TL.laneH - 4,
        fill: failed ? "url(#failed-hatch)" : famOf(i).color,
      });
      bars.append(bar);
      TL.bars.push([bar, i]);
    }
    TL.labels = sv("g", { id: "bar-labels" });
    plot.append(bars, TL.labels);
    svg.append(plot);
    if (!timed.length) {
      const t = sv("text", { x: TL.gutter + 10, y: TL.axis + 14, class: "lane-label" });
      t.textContent = "No task ran in this run: every result was reused.";
      svg.append(t);
    }
    box.append(svg);
    drawTimeline();
    timelineEvents(box);
    const legend = document.getElementById("legend");
    FAM.forEach((f) => {
      if (f.ran) legend.append(el("span", {}, el("span", { cls: "swatch", style: "background:" + f.color }), f.short));
    });
    if (R.counts.failed) legend.append(el("span", {}, el("span", { cls: "swatch", style: "background:#cf222e" }), "failed"));
    if (D.critical.length) legend.append(el("span", {}, el("span", { cls: "swatch", style: "background:#fff;border:2px solid #111" }), "critical path"));
  }

  // The page or the details panel changed the room the timeline has.
  function resizeTimeline() {
    const width = Math.max(400, document.getElementById("timeline").clientWidth || 800);
    if (width === TL.width) return;
    TL.width = width;
    TL.svg.setAttribute("width", width);
    TL.clip.setAttribute("width", width - TL.gutter);
    for (const bg of TL.backgrounds) bg.setAttribute("width", width);
    drawTimeline();
  }

  function xOf(t) {
    return TL.gutter + (t - TL.v0) * (TL.width - TL.gutter) / (TL.v1 - TL.v0);
  }

  function niceStep(span, target) {
    const raw = span / target;
    const mag = Math.pow(10, Math.floor(Math.log10(raw)));
    for (const m of [1, 2, 5, 10]) if (m * mag >= raw) return m * mag;
    return 10 * mag;
  }

  function drawTimeline() {
    const scale = (TL.width - TL.gutter) / (TL.v1 - TL.v0);
    const labels = [];
    for (const [bar, i] of TL.bars) {
      const x = TL.gutter + (T.start[i] - TL.v0) * scale;
      const full = T.dur[i] * scale;
      const w = full > 3 ? full - 1 : Math.max(1, full); // a gap between back-to-back tasks
      if (x > TL.width || x + w < TL.gutter) {
        bar.setAttribute("visibility", "hidden");
      } else {
        bar.setAttribute("visibility", "visible");
        bar.setAttribute("x", x.toFixed(2));
        bar.setAttribute("width", w.toFixed(2));
        if (w > 40 && labels.length < 500) labels.push([i, Math.max(x, TL.gutter), Math.min(x + w, TL.width)]);
      }
    }
    TL.labels.textContent = "";
    for (const [i, x0, x1] of labels) {
      const room = Math.floor((x1 - x0 - 6) / 6.5);
      if (room < 3) continue;
      const text = sv("text", { class: "bar-label", x: x0 + 3, y: TL.axis + T.lane[i] * TL.laneH + TL.laneH / 2 + 4 });
      const label = T.label[i];
      text.textContent = label.length > room ? label.slice(0, room - 1) + "…" : label;
      TL.labels.append(text);
    }
    const px0 = xOf(R.start), px1 = xOf(R.planned);
    TL.planning.setAttribute("x", px0);
    TL.planning.setAttribute("width", Math.max(0, px1 - px0));
    TL.planningLabel.setAttribute("x", px0 + 3);
    TL.planningLabel.setAttribute("visibility", px1 - px0 > 50 ? "visible" : "hidden");
    const axis = TL.axisG;
    axis.textContent = "";
    const step = niceStep(TL.v1 - TL.v0, Math.max(2, (TL.width - TL.gutter) / 110));
    const height = TL.svg.getAttribute("height");
    for (let t = Math.ceil(TL.v0 / step) * step; t <= TL.v1; t += step) {
      const x = xOf(t);
      if (x < TL.gutter) continue;
      axis.append(sv("line", { x1: x, x2: x, y1: TL.axis - 4, y2: height }));
      const label = sv("text", { x: x + 3, y: 14 });
      label.textContent = dur(Math.abs(t) < step / 1e6 ? 0 : t).replace("<1ms", "0s");
      axis.append(label);
    }
  }

  function zoom(factor, atX) {
    const t = TL.v0 + (atX - TL.gutter) / (TL.width - TL.gutter) * (TL.v1 - TL.v0);
    const full = TL.full[1] - TL.full[0];
    let span = Math.min(full, Math.max(1e-6, (TL.v1 - TL.v0) * factor));
    let v0 = t - (t - TL.v0) * span / (TL.v1 - TL.v0);
    v0 = Math.max(TL.full[0], Math.min(v0, TL.full[1] - span));
    TL.v0 = v0;
    TL.v1 = v0 + span;
    drawTimeline();
  }

  function timelineEvents(box) {
    const tip = document.getElementById("tooltip");
    box.addEventListener("wheel", (e) => {
      if (e.shiftKey) return;
      e.preventDefault();
      const x = e.clientX - box.getBoundingClientRect().left;
      zoom(e.deltaY > 0 ? 1.25 : 0.8, Math.max(TL.gutter, x));
    }, { passive: false });
    let drag = null;
    box.addEventListener("mousedown", (e) => {
      drag = { x: e.clientX, v0: TL.v0, v1: TL.v1, moved: false };
      box.classList.add("dragging");
    });
    window.addEventListener("mousemove", (e) => {
      if (!drag) return;
      const dx = e.clientX - drag.x;
      if (Math.abs(dx) > 3) drag.moved = true;
      if (!drag.moved) return;
      const dt = -dx / (TL.width - TL.gutter) * (drag.v1 - drag.v0);
      const span = drag.v1 - drag.v0;
      TL.v0 = Math.max(TL.full[0], Math.min(drag.v0 + dt, TL.full[1] - span));
      TL.v1 = TL.v0 + span;
      drawTimeline();
    });
    window.addEventListener("mouseup", (e) => {
      if (!drag) return;
      const moved = drag.moved;
      drag = null;
      box.classList.remove("dragging");
      if (!moved && e.target.classList && e.target.classList.contains("bar")) {
        select(Number(e.target.dataset.i));
      }
    });
    box.addEventListener("dblclick", () => { [TL.v0, TL.v1] = TL.full; drawTimeline(); });
    box.addEventListener("mouseover", (e) => {
      const bar = e.target.closest("rect.bar");
      if (!bar) { tip.hidden = true; return; }
      const i = Number(bar.dataset.i);
      tip.textContent = "";
      tip.append(el("div", {}, el("b", { text: T.label[i] })),
        el("div", { cls: "muted", text: famOf(i).name }),
        el("div", { text: T.state[i] + " in " + dur(T.dur[i]) + ", from " + dur(T.start[i]) }),
        T.reason[i] ? el("div", { text: "reason: " + T.reason[i] }) : null,
        critical.has(i) ? el("div", { text: "on the critical path" }) : null,
        el("div", { cls: "muted", text: D.lanes[T.lane[i]] }));
      tip.hidden = false;
    });
    box.addEventListener("mousemove", (e) => {
      if (tip.hidden) return;
      const w = tip.offsetWidth;
      tip.style.left = Math.min(e.clientX + 14, window.innerWidth - w - 8) + "px";
      tip.style.top = (e.clientY + 14) + "px";
    });
    box.addEventListener("mouseleave", () => { tip.hidden = true; });
    document.getElementById("zoom-in").addEventListener("click", () => zoom(0.5, (TL.gutter + TL.width) / 2));
    document.getElementById("zoom-out").addEventListener("click", () => zoom(2, (TL.gutter + TL.width) / 2));
    document.getElementById("zoom-reset").addEventListener("click", () => { [TL.v0, TL.v1] = TL.full; drawTimeline(); });
    document.getElementById("show-critical").addEventListener("change", (e) => {
      TL.svg.classList.toggle("show-critical", e.target.checked);
    });
  }

  // --- critical path ---------------------------------------------------------------------

  function criticalPath() {
    const P = D.parallelism;
    const p = document.getElementById("parallelism");
    const list = document.getElementById("critical");
    if (!D.critical.length) {
      p.textContent = "No task ran, so there is no critical path.";
      return;
    }
    const share = R.wall > 0 ? Math.round(100 * P.path / R.wall) : 0;
    p.textContent = "The longest chain of prerequisites: " + plural(D.critical.length, "task") + " taking " +
      dur(P.path) + " one after another, " + share + "% of the wall time (" + dur(R.wall) +
      "); no number of workers could have finished sooner. While tasks ran, " + P.used.toFixed(1) +
      " of " + plural(P.workers, "worker") + " were busy on average; the DAG allowed up to " +
      P.allowed.toFixed(1) + " at once (" + dur(P.busy) + " of work over a " + dur(P.path) + " critical path).";
    const shown = D.critical.slice(0, 100);
    for (const i of shown) {
      list.append(el("li", { "data-i": i }, taskLink(i), " ", dur(T.dur[i]),
        el("span", { cls: "hint", text: " at " + dur(T.start[i]) })));
    }
    if (D.critical.length > shown.length) {
      list.append(el("li", { cls: "hint", text: "… and " + num(D.critical.length - shown.length) + " more" }));
    }
  }

  // --- failures --------------------------------------------------------------------------

  function failures() {
    const failed = [];
    for (let i = 0; i < N; i++) if (T.state[i] === "failed") failed.push(i);
    if (!failed.length) return;
    document.getElementById("failures-section").hidden = false;
    const box = document.getElementById("failures");
    for (const i of failed.slice(0, 50)) {
      const [output, error, tb] = D.texts[i] || ["", "", ""];
      const card = el("div", { cls: "failure", "data-i": i },
        el("div", {}, el("b", {}, taskLink(i)), " ", el("span", { cls: "hint", text: famOf(i).name })),
        el("div", { cls: "error", text: error }));
      if (tb) card.append(el("pre", { cls: "traceback", text: tb }));
      if (output) card.append(el("div", { cls: "hint", text: "Captured output:" }), el("pre", { cls: "output", text: output }));
      box.append(card);
    }
    if (failed.length > 50) box.append(el("p", { cls: "hint", text: "… and " + num(failed.length - 50) + " more failed tasks (see the table of tasks)." }));
    const skipped = R.counts.skipped;
    if (skipped) box.append(el("p", { text: plural(skipped, "task") + " did not run because a prerequisite failed." }));
  }

  // --- DAG -------------------------------------------------------------------------------

  function dag() {
    const tabs = document.getElementById("dag-tabs");
    const views = [["Families", D.dag.families, "families"]];
    if (D.dag.tasks) views.push(["Tasks", D.dag.tasks, "tasks"]);
    const buttons = views.map(([name, view, kind]) => {
      const b = el("button", { type: "button", text: name, "data-view": kind });
      b.addEventListener("click", () => {
        buttons.forEach((x) => x.classList.toggle("active", x === b));
        drawDag(view, kind);
      });
      tabs.append(b);
      return b;
    });
    if (!D.dag.tasks) tabs.append(el("span", { cls: "hint", text: "(too many tasks to draw one by one; by families)" }));
    buttons[0].classList.add("active");
    drawDag(views[0][1], "families");
    const legend = document.getElementById("dag-legend");
    const seen = new Set();
    for (const view of [D.dag.families, D.dag.tasks]) if (view) view.nodes.forEach((n) => seen.add(n.state));
    for (const state of Object.keys(D.looks)) {
      if (!seen.has(state)) continue;
      const look = D.looks[state];
      legend.append(el("span", {}, el("span", { cls: "swatch", style: "background:" + look.fill + ";border:1px " +
        (look.dashed ? "dashed " : "solid ") + look.border }), state === "fresh" ? "reused (fresh)" : state));
    }
  }

  function drawDag(view, kind) {
    const box = document.getElementById("dag");
    box.textContent = "";
    let width = 0, height = 0;
    for (const n of view.nodes) {
      width = Math.max(width, n.box[0] + n.box[2]);
      height = Math.max(height, n.box[1] + n.box[3]);
    }
    const m = 24;
    const svg = sv("svg", { width: width + 2 * m, height: height + 2 * m + 10, id: "dag-svg" });
    const defs = sv("defs");
    const marker = sv("marker", { id: "arrow", viewBox: "0 0 10 10", refX: 10, refY: 5, markerWidth: 7,
      markerHeight: 7, orient: "auto-start-reverse" });
    marker.append(sv("path", { d: "M 0 0 L 10 5 L 0 10 z", fill: "#9aa4ae" }));
    defs.append(marker);
    svg.append(defs);
    const g = sv("g", { transform: "translate(" + m + "," + (m + 10) + ")" });
    svg.append(g);
    for (const [s, t, count] of view.edges) {
      const a = view.nodes[s].box, b = view.nodes[t].box;
      if (s === t) {
        const x = a[0] + a[2] - 14, y = a[1];
        g.append(sv("path", { class: "edge", d: "M " + (x - 10) + " " + y + " C " + (x - 14) + " " + (y - 22) + " " +
          (x + 14) + " " + (y - 22) + " " + (x + 8) + " " + y, "marker-end": "url(#arrow)" }));
        const lab = sv("text", { class: "edge-label", x: x + 12, y: y - 12 });
        lab.textContent = num(count);
        g.append(lab);
        continue;
      }
      const x1 = a[0] + a[2], y1 = a[1] + a[3] / 2, x2 = b[0], y2 = b[1] + b[3] / 2;
      const dx = Math.max(30, (x2 - x1) / 2);
      g.append(sv("path", { class: "edge", d: "M " + x1 + " " + y1 + " C " + (x1 + dx) + " " + y1 + " " +
        (x2 - dx) + " " + y2 + " " + x2 + " " + y2, "marker-end": "url(#arrow)" }));
      if (count > 1) {
        const lab = sv("text", { class: "edge-label", x: (x1 + x2) / 2, y: (y1 + y2) / 2 - 3 });
        lab.textContent = num(count);
        g.append(lab);
      }
    }
    view.nodes.forEach((n, k) => {
      const look = D.looks[n.state] || D.looks.fresh;
      const [x, y, w, h] = n.box;
      const isTarget = kind === "tasks" && T.target[n.task];
      const node = sv("g", { class: "node", "data-node": k });
      if (kind === "tasks") node.setAttribute("data-task", n.task);
      else node.setAttribute("data-family", k);
      node.append(sv("rect", { x: x, y: y, width: w, height: h, rx: 6, fill: look.fill, stroke: look.border,
        "stroke-width": look.bold || isTarget ? 2.5 : 1.2, "stroke-dasharray": look.dashed ? "4 3" : "none" }));
      n.label.forEach((line, j) => {
        const t = sv("text", { x: x + w / 2, y: y + 8 + 15 * j + 11, "text-anchor": "middle", class: j ? "sub" : "" });
        t.textContent = line.length > 42 ? line.slice(0, 41) + "…" : line;
        node.append(t);
      });
      const title = sv("title");
      title.textContent = n.label.join("\n") + "\n" + n.state;
      node.append(title);
      if (kind === "families") {
        node.addEventListener("click", () => {
          const input = document.getElementById("filter");
          input.value = FAM[k].name;
          renderTasks();
          document.getElementById("tasks-section").scrollIntoView();
        });
      }
      g.append(node);
    });
    box.append(svg);
  }

  // --- tables ----------------------------------------------------------------------------

  function row(cells, cls) {
    const tr = el("tr", { cls: cls || null });
    for (const c of cells) {
      if (c instanceof Node && c.tagName === "TD") tr.append(c);
      else tr.append(el("td", {}, c));
    }
    return tr;
  }

  function head(names, numeric) {
    return el("tr", {}, ...names.map((n, k) => el("th", { cls: numeric.includes(k) ? "num" : null, text: n })));
  }

  function numTd(text) { return el("td", { cls: "num", text: text }); }

  function slowest() {
    const table = document.getElementById("slowest");
    const timed = [];
    for (let i = 0; i < N; i++) if (T.lane[i] >= 0) timed.push(i);
    timed.sort((a, b) => T.dur[b] - T.dur[a]);
    const busy = D.parallelism.busy || 1;
    table.append(head(["task", "family", "duration", "share"], [2, 3]));
    for (const i of timed.slice(0, 20)) {
      table.append(row([taskLink(i), famOf(i).short, numTd(dur(T.dur[i])),
        numTd((100 * T.dur[i] / busy).toFixed(1) + "%")]));
    }
    if (!timed.length) table.append(row([el("td", { colspan: 4, text: "No task ran." })]));
    const fams = document.getElementById("families");
    fams.append(head(["family", "tasks", "ran for", "mean", "slowest", "in the cache"], [2, 3, 4, 5]));
    const order = FAM.map((f, k) => k).sort((a, b) => FAM[b].time - FAM[a].time);
    for (const k of order) {
      const f = FAM[k];
      const counts = Object.entries(f.counts).map(([s, n]) => num(n) + " " + s).join(", ");
      const cache = f.cache === null ? "" : size(f.cache) + " (" + num(f.entries) + (f.entries === 1 ? " entry)" : " entries)");
      fams.append(row([
        el("span", {}, el("span", { cls: "swatch", style: "background:" + f.color }), f.short),
        counts, numTd(f.ran ? dur(f.time) : ""), numTd(f.ran ? dur(f.time / f.ran) : ""),
        numTd(f.ran ? dur(f.max) : ""), numTd(cache)]));
    }
  }

  const LIST = { sort: "order", desc: false, limit: 300 };

  function tasksTable() {
    const input = document.getElementById("filter");
    let timer = null;
    input.addEventListener("input", () => {
      clearTimeout(timer);
      timer = setTimeout(renderTasks, 120);
    });
    renderTasks();
  }

  function renderTasks() {
    const table = document.getElementById("tasks");
    const needle = document.getElementById("filter").value.trim().toLowerCase();
    const match = [];
    for (let i = 0; i < N; i++) {
      if (!needle || T.label[i].toLowerCase().includes(needle) || famOf(i).name.toLowerCase().includes(needle) ||
        T.state[i].includes(needle) || T.reason[i].includes(needle)) match.push(i);
    }
    const key = {
      order: (i) => i, task: (i) => T.label[i], start: (i) => (T.start[i] === null ? Infinity : T.start[i]),
      duration: (i) => T.dur[i], size: (i) => T.size[i],
    }[LIST.sort];
    match.sort((a, b) => {
      const ka = key(a), kb = key(b);
      const c = ka < kb ? -1 : ka > kb ? 1 : a - b;
      return LIST.desc ? -c : c;
    });
    table.textContent = "";
    const cols = [["task", "task"], ["family", null], ["state", null], ["reason", null],
      ["start", "start"], ["duration", "duration"], ["value", "size"]];
    const tr = el("tr");
    cols.forEach(([name, sortKey], k) => {
      const th = el("th", { cls: (k >= 4 ? "num " : "") + (sortKey ? "sortable" : ""),
        text: name + (LIST.sort === sortKey ? (LIST.desc ? " ▾" : " ▴") : "") });
      if (sortKey) {
        th.addEventListener("click", () => {
          LIST.desc = LIST.sort === sortKey ? !LIST.desc : sortKey !== "task" && sortKey !== "start";
          LIST.sort = sortKey;
          renderTasks();
        });
      }
      tr.append(th);
    });
    table.append(tr);
    const shown = match.slice(0, LIST.limit);
    const frag = document.createDocumentFragment();
    for (const i of shown) {
      const state = T.state[i];
      frag.append(row([taskLink(i), famOf(i).short,
        el("td", { cls: "state-" + state.replace(" ", "-"), text: state + (T.attempts[i] > 1 ? " (" + T.attempts[i] + " attempts)" : "") }),
        T.reason[i], numTd(T.start[i] === null ? "" : dur(T.start[i])),
        numTd(T.lane[i] >= 0 || T.state[i] === "reused" ? dur(T.dur[i]) : ""),
        numTd(["ran", "reused", "kept"].includes(state) ? size(T.size[i]) : "")]));
    }
    table.append(frag);
    if (match.length > shown.length) {
      const more = el("tr", { cls: "more" }, el("td", { colspan: 7 },
        num(match.length - shown.length) + " more; ", el("a", { cls: "link", text: "show 1,000 more" }), " or narrow the filter."));
      more.querySelector("a").addEventListener("click", () => { LIST.limit += 1000; renderTasks(); });
      table.append(more);
    }
    const recorded = N < R.total ? " (of " + num(R.total) + " in the DAG: the others were reused and are counted by family)" : "";
    document.getElementById("filter-count").textContent = plural(match.length, "task") + recorded;
  }

  // --- details ---------------------------------------------------------------------------

  let dependents = null;
  let selected = -1;

  function select(i) {
    if (!(i >= 0 && i < N)) return;
    if (dependents === null) {
      dependents = Array.from({ length: N }, () => []);
      for (let k = 0; k < N; k++) for (const d of T.deps[k]) dependents[d].push(k);
    }
    if (selected >= 0) {
      const old = document.querySelector('rect.bar[data-i="' + selected + '"]');
      if (old) old.classList.remove("sel");
    }
    selected = i;
    const bar = document.querySelector('rect.bar[data-i="' + i + '"]');
    if (bar) bar.classList.add("sel");
    const box = document.getElementById("details");
    box.textContent = "";
    const close = el("button", { cls: "close", type: "button", title: "Close", text: "×" });
    close.addEventListener("click", closeDetails);
    box.append(close, el("h3", { text: T.label[i] }));
    const table = el("table");
    const add = (name, value) => {
      if (value === null || value === undefined || value === "") return;
      table.append(el("tr", {}, el("th", { text: name }), el("td", {}, value)));
    };
    add("family", famOf(i).name);
    add("id", T.id[i]);
    let args = T.args[i];
    try { args = JSON.stringify(JSON.parse(args), null, 1).replace(/\n\s*/g, " "); } catch (e) { /* as recorded */ }
    add("arguments", args);
    add("state", T.state[i] + (T.attempts[i] > 1 ? " after " + T.attempts[i] + " attempts" : "") +
      (T.target[i] ? " (a target)" : ""));
    add("reason", T.reason[i]);
    if (T.cause[i]) add("skipped because", T.cause[i] + " failed");
    if (T.start[i] !== null) {
      add("started", dur(T.start[i]) + " into the run (" + when(R.started + T.start[i] - R.start) + ")");
      add("duration", dur(T.dur[i]) + (critical.has(i) ? " (on the critical path)" : ""));
      add("worker", T.worker[i]);
    if (T.lane[i] >= 0) add("lane", D.lanes[T.lane[i]]);
    } else if (T.state[i] === "reused" && T.dur[i]) {
      add("stored result took", dur(T.dur[i]));
    }
    if (["ran", "reused", "kept"].includes(T.state[i])) add("value size", size(T.size[i]));
    add("data directory", T.data[i] === null ? "" : size(T.data[i]) + " now");
    const links = (ids) => {
      if (!ids.length) return "";
      const span = el("span");
      ids.slice(0, 50).forEach((d, k) => { if (k) span.append(", "); span.append(taskLink(d)); });
      if (ids.length > 50) span.append(" … " + num(ids.length - 50) + " more");
      return span;
    };
    add("prerequisites", links(T.deps[i]));
    add("dependents", links(dependents[i]));
    box.append(table);
    const [output, error, tb] = D.texts[i] || ["", "", ""];
    if (error) box.append(el("h4", { text: "Error" }), el("div", { cls: "state-failed", text: error }));
    if (tb) box.append(el("h4", { text: "Traceback" }), el("pre", { cls: "traceback", text: tb }));
    box.append(el("h4", { text: "Captured output" }));
    box.append(output ? el("pre", { cls: "output", text: output })
      : el("div", { cls: "hint", text: T.lane[i] >= 0 ? "(no output)" : "(did not run in this run)" }));
    box.hidden = false;
    box.scrollTop = 0;
    document.body.classList.add("with-details");
    resizeTimeline();
    if (history.replaceState) history.replaceState(null, "", "#task-" + T.id[i]);
  }

  // --- start -----------------------------------------------------------------------------

  const started = performance.now();
  header();
  summary();
  timeline();
  criticalPath();
  failures();
  dag();
  slowest();
  tasksTable();
  function closeDetails() {
    document.getElementById("details").hidden = true;
    document.body.classList.remove("with-details");
    resizeTimeline();
  }

  document.addEventListener("keydown", (e) => {
    if (e.key === "Escape") closeDetails();
  });
  window.addEventListener("resize", resizeTimeline);
  const hash = location.hash.match(/^#task-([0-9a-f]+)$/);
  if (hash) {
    const i = T.id.indexOf(hash[1]);
    if (i >= 0) select(i);
  }
  window.checkpointReport = { data: D, select: select, renderMs: performance.now() - started };
  document.body.dataset.ready = "true";
})();
