// HTTP helpers for the masklet app API (see the contract in the backend's docs).
// Every failure becomes an ApiError carrying the server's `detail`, so the page can show it.

// Sent with every request the page makes. The server refuses a state change without it:
// a page of another site can neither add it to a form nor to a no-cors fetch (a custom
// header needs a CORS preflight, which the server never grants).
export const APP_HEADERS = Object.freeze({ "X-Masklet": "1" });

export class ApiError extends Error {
  constructor(status, detail, body) {
    super(detailText(detail) || `HTTP ${status}`);
    this.status = status;
    this.body = body;
  }
}

// FastAPI's validation errors put a list in `detail`; everything else is a string.
function detailText(detail) {
  if (Array.isArray(detail)) {
    const first = detail[0] || {};
    const where = Array.isArray(first.loc) ? ` (${first.loc.join(".")})` : "";
    return `${first.msg || "invalid request"}${where}`;
  }
  return typeof detail === "string" ? detail : "";
}

async function errorFrom(response) {
  let body = null;
  try {
    body = await response.json();
  } catch {
    // Not JSON (a proxy page, a crash): the status text is all there is.
  }
  const detail = body && body.detail !== undefined ? body.detail : response.statusText;
  return new ApiError(response.status, detail, body);
}

function networkError(err) {
  return new ApiError(0, `cannot reach the masklet server (${err.message})`, null);
}

/** JSON request; resolves to the parsed body (null for 204). */
export async function api(method, path, body) {
  const init = { method, headers: { ...APP_HEADERS }, cache: "no-store" };
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let response;
  try {
    response = await fetch(path, init);
  } catch (err) {
    throw networkError(err);
  }
  if (!response.ok) throw await errorFrom(response);
  if (response.status === 204) return null;
  return response.json();
}

/** GET a binary resource (a mask PNG); resolves to a Blob. */
export async function fetchBlob(path) {
  let response;
  try {
    response = await fetch(path, { headers: { ...APP_HEADERS }, cache: "no-store" });
  } catch (err) {
    throw networkError(err);
  }
  if (!response.ok) throw await errorFrom(response);
  return response.blob();
}

/**
 * Multipart POST with upload progress (fetch cannot report it; XMLHttpRequest can).
 * onProgress(fraction) is called while the bytes go out.
 */
export function postForm(path, form, onProgress) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("POST", path);
    for (const [name, value] of Object.entries(APP_HEADERS)) xhr.setRequestHeader(name, value);
    xhr.responseType = "text";
    if (onProgress) {
      xhr.upload.onprogress = (e) => {
        if (e.lengthComputable) onProgress(e.loaded / e.total);
      };
    }
    xhr.onerror = () => reject(networkError(new Error("upload failed")));
    xhr.onload = () => {
      let body = null;
      try {
        body = xhr.responseText ? JSON.parse(xhr.responseText) : null;
      } catch {
        body = null;
      }
      if (xhr.status >= 200 && xhr.status < 300) {
        resolve(body);
      } else {
        const detail = body && body.detail !== undefined ? body.detail : xhr.statusText;
        reject(new ApiError(xhr.status, detail, body));
      }
    };
    xhr.send(form);
  });
}

/** Path of a video's resource: videoPath(3, "frames", 12) -> /api/videos/3/frames/12 */
export function videoPath(videoId, ...parts) {
  return ["/api/videos", videoId, ...parts].join("/");
}
