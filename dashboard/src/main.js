// The dashboard page: fetches the read API's /v1/dashboard/* JSON with the reader's
// token and draws it with Chart.js. Everything it loads comes from the sink itself.
import {
  BarController,
  BarElement,
  CategoryScale,
  Chart,
  Filler,
  Legend,
  LinearScale,
  LineController,
  LineElement,
  PointElement,
  Tooltip,
} from "chart.js";
import { MatrixController, MatrixElement } from "chartjs-chart-matrix";

Chart.register(
  BarController,
  BarElement,
  CategoryScale,
  Filler,
  Legend,
  LinearScale,
  LineController,
  LineElement,
  MatrixController,
  MatrixElement,
  PointElement,
  Tooltip,
);
// no animation: the page is drawn once, and a screenshot shows the final state
Chart.defaults.animation = false;
Chart.defaults.maintainAspectRatio = false;

const BLUE = "rgb(37, 99, 235)";
const ORANGE = "rgb(234, 88, 12)";
const PALETTE = ["#2563eb", "#ea580c", "#16a34a", "#9333ea", "#dc2626", "#0891b2", "#ca8a04", "#4b5563"];
const TOKEN_KEY = "learnstream.readerToken";
const charts = {};

// The token may come in the fragment (#token=…), which browsers never send to a
// server; it is kept for this tab only and removed from the address bar.
function readerToken() {
  const found = location.hash.match(/(?:^#|&)token=([^&]+)/);
  if (found) {
    sessionStorage.setItem(TOKEN_KEY, decodeURIComponent(found[1]));
    history.replaceState(null, "", location.pathname + location.search);
  }
  return sessionStorage.getItem(TOKEN_KEY);
}

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

async function api(path, params) {
  const url = new URL(`../v1/dashboard/${path}`, location.href);
  for (const [name, value] of Object.entries(params)) url.searchParams.set(name, value);
  const token = readerToken();
  const response = await fetch(url, {
    headers: token ? { authorization: `Bearer ${token}` } : {},
  });
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new ApiError(response.status, body.detail || body.error || response.statusText);
  return body;
}

function draw(id, config) {
  const canvas = document.getElementById(id);
  charts[id] = new Chart(canvas, config);
}

function empty(id, message) {
  const holder = document.getElementById(id).parentElement;
  holder.innerHTML = `<p class="empty">${message}</p>`;
}

function learners({ rows }) {
  if (!rows.length) return empty("learners", "No learner progress yet.");
  draw("learners", {
    type: "bar",
    data: {
      labels: rows.map((r) => `${r.user_id} · L${r.level}`),
      datasets: [
        { type: "bar", label: "XP", data: rows.map((r) => r.xp), backgroundColor: BLUE, yAxisID: "y", order: 1 },
        {
          type: "line",
          label: "Current streak (days)",
          data: rows.map((r) => r.current_streak),
          borderColor: ORANGE,
          backgroundColor: ORANGE,
          pointRadius: 4,
          yAxisID: "streak",
          order: 0, // drawn over the bars
        },
      ],
    },
    options: {
      scales: {
        y: { beginAtZero: true, title: { display: true, text: "XP" } },
        streak: {
          position: "right",
          beginAtZero: true,
          ticks: { precision: 0 },
          grid: { drawOnChartArea: false },
          title: { display: true, text: "streak (days)" },
        },
      },
      plugins: {
        tooltip: {
          callbacks: {
            afterBody: (items) => {
              const r = rows[items[0].dataIndex];
              return `level ${r.level} · longest streak ${r.longest_streak} days`;
            },
          },
        },
      },
    },
  });
}

function dailyActive({ rows }) {
  if (!rows.some((r) => r.learners > 0)) return empty("daily-active", "No activity in this period.");
  draw("daily-active", {
    type: "line",
    data: {
      labels: rows.map((r) => r.day),
      datasets: [
        {
          label: "Active learners",
          data: rows.map((r) => r.learners),
          borderColor: BLUE,
          backgroundColor: "rgba(37, 99, 235, 0.15)",
          fill: true,
          pointRadius: 3,
          pointBackgroundColor: BLUE,
        },
      ],
    },
    options: {
      scales: {
        x: { ticks: { maxRotation: 0, autoSkip: true, maxTicksLimit: 8 } },
        y: { beginAtZero: true, ticks: { precision: 0 } },
      },
    },
  });
}

function retention({ rows }) {
  if (!rows.length) return empty("retention", "No cohorts in this period.");
  const cohorts = [...new Set(rows.map((r) => r.cohort))];
  draw("retention", {
    type: "line",
    data: {
      datasets: cohorts.map((cohort, i) => {
        const colour = PALETTE[i % PALETTE.length];
        const own = rows.filter((r) => r.cohort === cohort);
        return {
          label: `week of ${cohort} (${own[0].cohort_size})`,
          data: own.map((r) => ({ x: r.week_offset, y: Math.round(r.retained * 1000) / 10 })),
          borderColor: colour,
          backgroundColor: colour,
          pointRadius: 4,
          clip: false, // a cohort at 100% sits on the top edge
        };
      }),
    },
    options: {
      layout: { padding: { top: 6 } },
      scales: {
        x: { type: "linear", ticks: { stepSize: 1 }, title: { display: true, text: "weeks since first active" } },
        y: { min: 0, max: 100, title: { display: true, text: "% of cohort active" } },
      },
    },
  });
}

// white to BLUE as mastery goes from 0 to 1, opaque so the cells read on any background
function masteryColour(p) {
  const mix = (full) => Math.round(255 + (full - 255) * (0.1 + 0.9 * p));
  return `rgb(${mix(37)}, ${mix(99)}, ${mix(235)})`;
}

function mastery({ rows }) {
  if (!rows.length) return empty("mastery", "No topic mastery yet.");
  const topics = [...new Set(rows.map((r) => r.topic_id))].sort();
  const people = [...new Set(rows.map((r) => r.user_id))].sort();
  const cell = (size, count) => ({ chart }) => ((chart.chartArea || {})[size] || 0) / count - 2;
  draw("mastery", {
    type: "matrix",
    data: {
      datasets: [
        {
          label: "P(mastered)",
          data: rows.map((r) => ({ x: r.topic_id, y: r.user_id, v: r.p_mastery, mastered: r.mastered })),
          backgroundColor: (ctx) => masteryColour(ctx.raw ? ctx.raw.v : 0),
          borderColor: (ctx) => (ctx.raw && ctx.raw.mastered ? "#1e3a8a" : "transparent"),
          borderWidth: 2,
          width: cell("width", topics.length),
          height: cell("height", people.length),
        },
      ],
    },
    options: {
      plugins: {
        legend: { display: false },
        tooltip: {
          callbacks: {
            title: (items) => `${items[0].raw.y} · ${items[0].raw.x}`,
            label: (item) => `P(mastered) ${item.raw.v.toFixed(2)}${item.raw.mastered ? " (mastered)" : ""}`,
          },
        },
      },
      scales: {
        x: { type: "category", labels: topics, offset: true, grid: { display: false } },
        y: { type: "category", labels: people, offset: true, grid: { display: false } },
      },
    },
  });
}

function blindSpots({ rows }) {
  if (!rows.length) return empty("blind-spots", "No blind spots found.");
  draw("blind-spots", {
    type: "bar",
    data: {
      labels: rows.map((r) => r.drill_name || r.drill_id),
      datasets: [
        {
          label: "Learners",
          data: rows.map((r) => r.learners),
          backgroundColor: ORANGE,
        },
      ],
    },
    options: {
      indexAxis: "y",
      scales: { x: { beginAtZero: true, ticks: { precision: 0 } } },
      plugins: {
        legend: { display: false },
        tooltip: { callbacks: { afterLabel: (item) => `average score ${rows[item.dataIndex].avg_score}` } },
      },
    },
  });
}

async function main() {
  const page = new URLSearchParams(location.search);
  const pick = (...names) => Object.fromEntries(names.filter((n) => page.has(n)).map((n) => [n, page.get(n)]));
  const form = document.getElementById("token-form");
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, document.getElementById("token").value.trim());
    location.reload();
  });
  const [progress, active, cohorts, heat, spots] = await Promise.all([
    api("learners", pick("limit")),
    api("daily-active", pick("days", "as_of")),
    api("retention", pick("weeks", "as_of")),
    api("mastery", pick("learners", "topics")),
    api("blind-spots", pick("drills")),
  ]);
  document.getElementById("scope").textContent =
    `as ${progress.reader.role} ${progress.reader.user_id} · ${active.from} to ${active.to}`;
  learners(progress);
  dailyActive(active);
  retention(cohorts);
  mastery(heat);
  blindSpots(spots);
}

// for tests and for poking at the page from the browser's console
window.learnstreamDashboard = { charts };
main().then(
  () => {
    document.body.dataset.state = "ready";
  },
  (error) => {
    const shown = document.getElementById("error");
    shown.textContent = `Could not load the dashboard: ${error.message}`;
    shown.hidden = false;
    if (error.status === 401 || error.status === 403) document.getElementById("token-form").hidden = false;
    document.body.dataset.state = "error";
  },
);
