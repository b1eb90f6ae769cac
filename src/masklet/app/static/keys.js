// Keyboard shortcuts (listed in the help dialog of index.html).

function typingIn(target) {
  if (target.isContentEditable) return true;
  if (target.tagName === "TEXTAREA" || target.tagName === "SELECT") return true;
  // The frame slider's own arrow keys are replaced by ours, so they do not step twice;
  // another slider (the brush radius) keeps its arrow keys.
  if (target.tagName === "INPUT" && target.type === "range") return target.id !== "frame-slider";
  return target.tagName === "INPUT" && !["checkbox", "button", "color", "file"].includes(target.type);
}

/** Show the help dialog, or close it when it is open. */
export function toggleHelp() {
  const help = document.getElementById("help");
  if (help.open) help.close();
  else help.showModal();
}

/** app: the App of app.js. */
export function bindKeys(app) {
  document.getElementById("help-btn").addEventListener("click", toggleHelp);
  document.addEventListener("keydown", (e) => {
    // The open help dialog is modal: "?" closes it, Esc is the dialog's own.
    if (document.getElementById("help").open) {
      if (e.key === "?") toggleHelp();
      return;
    }
    if (e.key === "Escape") {
      app.view.cancelDrag();
      app.brush.cancel();
      app.tracking.cancel();
      if (typingIn(e.target)) e.target.blur();
      return;
    }
    if (typingIn(e.target) || e.altKey || e.metaKey) return;
    const handled = e.ctrlKey ? ctrlShortcut(app, e) : plainShortcut(app, e);
    if (handled) e.preventDefault();
  });
}

function ctrlShortcut(app, e) {
  const key = e.key.toLowerCase();
  if (key === "z" && !e.shiftKey) app.editor.undoRedo("undo");
  else if ((key === "z" && e.shiftKey) || key === "y") app.editor.undoRedo("redo");
  else return false;
  return true;
}

function plainShortcut(app, e) {
  const step = e.shiftKey ? 10 : 1;
  switch (e.key) {
    case "ArrowLeft":
      app.setFrame(app.frame - step);
      return true;
    case "ArrowRight":
      app.setFrame(app.frame + step);
      return true;
    case "Home":
      app.setFrame(0);
      return true;
    case "End":
      app.setFrame(Number.MAX_SAFE_INTEGER);
      return true;
    case "n":
    case "N":
      app.editor.newObject();
      return true;
    case "t":
    case "T":
      app.tracking.start();
      return true;
    case "c":
    case "C":
      app.editor.clearFrame();
      return true;
    case "?":
      toggleHelp();
      return true;
    default:
      return toolOrReviewShortcut(app, e);
  }
}

// Brush, eraser and review keys (f: next flagged frame, Shift+F: previous).
function toolOrReviewShortcut(app, e) {
  switch (e.key.toLowerCase()) {
    case "b":
      app.brush.toggle("paint");
      return true;
    case "e":
      app.brush.toggle("erase");
      return true;
    case "[":
      app.brush.nudgeRadius(-1);
      return true;
    case "]":
      app.brush.nudgeRadius(1);
      return true;
    case "f":
      app.review.step(e.shiftKey ? -1 : 1);
      return true;
    case "r":
      app.review.toggleMode();
      return true;
    default:
      if (/^[1-9]$/.test(e.key)) {
        app.selectObjectAt(Number(e.key) - 1);
        return true;
      }
      return false;
  }
}
