// Rendering of the side panels: objects, sessions, folder browser, measures, exports.
// Pure DOM building; the actions are callbacks supplied by app.js.

export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (key === "dataset") Object.assign(node.dataset, value);
    else if (value !== undefined && value !== null && value !== false) node.setAttribute(key, value);
  }
  node.append(...children.filter((c) => c !== null && c !== undefined));
  return node;
}

/** objects: API Objects in list order; actions: {select, rename, recolour, remove}. */
export function renderObjects(list, objects, activeId, actions) {
  // The list is rebuilt when the video changes (an event from the server may arrive while
  // a name is being edited): give the focus, the typed text and the caret back afterwards.
  const focused = list.contains(document.activeElement) ? document.activeElement : null;
  const keep = focused && focused.tagName === "INPUT" && {
    id: focused.closest("li")?.dataset.objectId, type: focused.type, value: focused.value,
    start: focused.type === "text" ? focused.selectionStart : null,
    end: focused.type === "text" ? focused.selectionEnd : null,
  };
  list.replaceChildren(
    ...objects.map((obj, i) => {
      // Editing an object's name or colour is working on that object: focusing either
      // selects it, so the next click on the frame goes to the object being looked at.
      const name = el("input", {
        type: "text", value: obj.name, "aria-label": `Name of object ${obj.id}`,
        onfocus: () => actions.select(obj.id),
        onchange: (e) => actions.rename(obj.id, e.target.value.trim() || obj.name),
        onkeydown: (e) => { if (e.key === "Enter") e.target.blur(); },
      });
      const colour = el("input", {
        type: "color", value: obj.color, title: "Colour",
        onfocus: () => actions.select(obj.id),
        onchange: (e) => actions.recolour(obj.id, e.target.value),
      });
      const item = el("li", {
        class: obj.id === activeId ? "object active" : "object",
        dataset: { objectId: String(obj.id) },
        onclick: (e) => { if (e.target.tagName !== "INPUT" && e.target.tagName !== "BUTTON") actions.select(obj.id); },
      },
      el("span", { class: "key", title: i < 9 ? `Select with ${i + 1}` : "" }, i < 9 ? String(i + 1) : ""),
      colour, name,
      actions.labelSelect ? actions.labelSelect(obj) : null,
      el("span", { class: "oid" }, `#${obj.id}`),
      el("button", {
        type: "button", class: "danger small", title: "Delete this object and all its masks",
        onclick: () => actions.remove(obj.id, obj.name),
      }, "×"));
      return item;
    }),
  );
  if (!objects.length) list.append(el("li", { class: "empty" }, "No objects yet: click the frame or press N."));
  if (keep) {
    const again = list.querySelector(`li[data-object-id="${keep.id}"] input[type=${keep.type}]`);
    if (again) {
      again.value = keep.value;
      again.focus({ preventScroll: true });
      if (keep.start !== null) again.setSelectionRange(keep.start, keep.end);
    }
  }
}

/** Move the "active" mark to object `activeId` without rebuilding the list (keeps focus). */
export function markActiveObject(list, activeId) {
  for (const item of list.querySelectorAll("li.object")) {
    item.classList.toggle("active", item.dataset.objectId === String(activeId));
  }
}

/** "2026-12-06 19:40", local time, from epoch seconds. */
function dateText(epoch) {
  const d = new Date(epoch * 1000);
  const two = (n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${two(d.getMonth() + 1)}-${two(d.getDate())} ` +
    `${two(d.getHours())}:${two(d.getMinutes())}:${two(d.getSeconds())}`;
}

/** videos: VideoSummary list; actions: {open, remove}. */
export function renderVideos(list, videos, currentId, actions) {
  // Sessions that share a name are told apart by where they come from and when opened.
  const counts = new Map();
  for (const v of videos) counts.set(v.name, (counts.get(v.name) || 0) + 1);
  list.replaceChildren(
    ...videos.map((v) =>
      el("li", { class: v.id === currentId ? "video active" : "video", dataset: { videoId: String(v.id) } },
        el("button", { type: "button", class: "link", onclick: () => actions.open(v.id) }, v.name),
        el("span", { class: "meta" },
          `${v.kind === "images" ? "images" : "video"} · ${v.num_frames} fr${v.tracking ? " · tracking" : ""}`),
        counts.get(v.name) > 1
          ? el("span", { class: "where", title: `${v.location || ""}, opened ${dateText(v.created_at)}` },
            // The path is cut at its start when long (its end says most); the date never is.
            el("span", { class: "path" }, el("bdi", {}, v.location || "?")),
            el("span", { class: "date" }, dateText(v.created_at)))
          : null,
        el("button", {
          type: "button", class: "danger small", title: "Delete this session (files opened by path are kept)",
          onclick: () => actions.remove(v.id, v.name),
        }, "×"))),
  );
  if (!videos.length) list.append(el("li", { class: "empty" }, "No sessions yet."));
}

/** listing: GET /api/browse body; actions: {enter(path), open(path, type)}. */
export function renderBrowse(list, listing, actions) {
  list.replaceChildren(
    ...listing.entries.map((entry) => {
      const openable = entry.type !== "dir" || entry.frames > 0;
      // Words, not emoji: a plain Linux machine may have no emoji font.
      const kind = entry.type === "dir" ? (entry.frames ? `${entry.frames} frames` : "folder") : entry.type;
      const label = [entry.type === "dir" ? `${entry.name}/` : entry.name, el("span", { class: "kind" }, kind)];
      return el("li", { class: "entry" },
        entry.type === "dir"
          ? el("button", { type: "button", class: "link", onclick: () => actions.enter(entry.path) }, ...label)
          : el("span", {}, ...label),
        openable
          ? el("button", { type: "button", class: "small", onclick: () => actions.open(entry.path, entry.type) }, "Open")
          : null);
    }),
  );
  if (!listing.entries.length) list.append(el("li", { class: "empty" }, "Nothing to open here."));
}

function seconds(s) {
  if (s < 60) return `${s.toFixed(1)} s`;
  return `${Math.floor(s / 60)} min ${Math.round(s % 60)} s`;
}

/** metrics: GET /metrics body; names: Map object id -> name. */
export function renderMetrics(dl, metrics, names) {
  const v = metrics.video;
  const rows = [
    ["Clicks", String(v.clicks)],
    ["Clicks per clicked frame", v.clicks_per_clicked_frame.toFixed(2)],
    ["Frames edited", `${v.edited_frames} / ${metrics.num_frames} (${(100 * v.edited_share).toFixed(1)} %)`],
    ["Annotation time", seconds(v.annotation_time_s)],
    ["Time per frame", seconds(v.time_per_frame_s)],
  ];
  const nodes = rows.flatMap(([k, val]) => [el("dt", {}, k), el("dd", {}, val)]);
  const perObject = Object.entries(metrics.objects || {});
  if (perObject.length) {
    const table = el("table", { class: "per-object" },
      el("tr", {}, el("th", {}, "object"), el("th", {}, "clicks"), el("th", {}, "per frame"), el("th", {}, "time")),
      ...perObject.map(([id, m]) =>
        el("tr", {},
          el("td", {}, names.get(Number(id)) || `#${id}`),
          el("td", {}, String(m.clicks)),
          el("td", {}, m.clicks_per_clicked_frame.toFixed(2)),
          el("td", {}, seconds(m.annotation_time_s)))));
    nodes.push(el("dt", { class: "wide" }, "Per object"), el("dd", { class: "wide" }, table));
  }
  dl.replaceChildren(...nodes);
}

/** Add (or refresh) the download link of an export. */
export function addExportLink(list, result) {
  const existing = [...list.querySelectorAll("a")].find((a) => a.dataset.file === result.file);
  if (existing) existing.parentElement.remove();
  const link = el("a", {
    href: result.url, download: result.file, dataset: { format: result.format, file: result.file },
  }, result.file);
  list.prepend(el("li", {}, link, el("span", { class: "meta" }, ` ${result.format}`)));
  return link;
}
