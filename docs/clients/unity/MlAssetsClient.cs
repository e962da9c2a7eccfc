// MlAssetsClient: a minimal Unity client for `ml-assets serve` (see docs/serving.md).
//
// Usage: put this component on one root GameObject of the first scene (it survives scene loads),
// set Base Url and Api Key in the Inspector, and Player Id once the player is known (empty: the
// device id). Instance is set in Awake; events tracked before Start are kept behind the saved ones.
//     MlAssetsClient.Instance.Track("level_complete", 3);
//     MlAssetsClient.Instance.Track("purchase", 4.99, "{\"sku\":\"gems_100\"}");
//     MlAssetsClient.Instance.Predict("churn", playerId, (p, error) => {
//         if (error == null) Debug.Log(p.probability + " " + p.version + " " + p.source); });
//
// Why it works as it does:
// - Each event gets a GUID event_id when tracked and keeps it through retries and restarts: the
//   server drops repeats by event_id within its dedup horizon (7 days by default), so resending
//   after a timeout, a 5xx, a lost connection or a killed game never double counts.
// - A batch leaves the queue only on 200 (the server fsync'd it) or 400 (the listed events were
//   refused, the rest accepted: resending cannot help). A 413 splits it (same ids); anything else
//   (no answer, 401, 429, 5xx) resends the same bytes after an exponential backoff with jitter.
// - The queue is saved to Application.persistentDataPath on pause, on quit and after each settled
//   batch, and reloaded at start.
// Limits: JsonUtility cannot serialise a Dictionary, so `properties` is a JSON object you serialise
// yourself; it travels as a JSON string, which the server stores as it is (nobody checks it). The
// lake quarantines negative values, and events reaching it more than its watermark (3 days by
// default) after they happened: a queue kept offline longer than that ends in quarantine.
using System;
using System.Collections;
using System.Collections.Generic;
using System.Globalization;
using System.IO;
using System.Text;
using UnityEngine;
using UnityEngine.Networking;

public class MlAssetsClient : MonoBehaviour
{
    public static MlAssetsClient Instance { get; private set; }

    [Tooltip("The server, e.g. https://collect.example.com")] public string baseUrl = "http://127.0.0.1:8000";
    public string apiKey = "";
    [Tooltip("Empty: SystemInfo.deviceUniqueIdentifier")] public string playerId = "";
    public float flushSeconds = 10f;
    public int flushAtCount = 500;
    public float maxBackoffSeconds = 300f;
    // longer than the server's own 30 s wait for a durable write, so a retry does not race it
    public int requestTimeoutSeconds = 60;

    const int MaxBatchEvents = 2000;   // the server's max_batch_events
    const int MaxBatchBytes = 900000;  // under its max_batch_bytes (1,000,000), with room to spare

    [Serializable] public class QueuedEvent
    {
        public string event_id, player_id, event_time, event_type, platform, app_version, properties;
        public bool has_value;  // JsonUtility has no nullable numbers
        public double value;
    }
    [Serializable] public class QueueState { public List<QueuedEvent> events = new List<QueuedEvent>(); }
    [Serializable] public class Rejection { public int index; public string event_id, reason; }
    [Serializable] public class EventsReply { public int accepted, duplicates; public Rejection[] rejected; }
    [Serializable] public class Reason { public string feature; public double contribution; }
    [Serializable] public class Prediction
    {
        public string player_id, version, arm, features_as_of, source, error;
        public double probability;
        public Reason[] reasons;
        [NonSerialized] public bool degraded;  // from the reply: the online store was down
    }
    [Serializable] public class PredictReply
    {
        public string model, request_id;
        public bool degraded;
        public Prediction[] predictions;
    }
    [Serializable] public class PredictRequest { public string player_id; }

    readonly List<QueuedEvent> queue = new List<QueuedEvent>();
    bool flushNow;

    string QueuePath { get { return Path.Combine(Application.persistentDataPath, "ml_assets_queue.json"); } }

    void Awake()
    {
        if (Instance != null && Instance != this) { Destroy(gameObject); return; }
        Instance = this;
        DontDestroyOnLoad(gameObject);
    }

    IEnumerator Start()
    {
        if (Instance != this) yield break;
        Load();
        while (true)
        {
            float due = Time.realtimeSinceStartup + flushSeconds;
            while (!flushNow && Time.realtimeSinceStartup < due) yield return null;
            flushNow = false;
            yield return StartCoroutine(SendQueued());
        }
    }

    void OnApplicationPause(bool paused) { if (paused) Save(); }
    void OnApplicationQuit() { Save(); }

    /// <summary>Queues one event stamped now (UTC) with a new event_id; it is sent within flushSeconds.</summary>
    public void Track(string eventType, double? value = null, string propertiesJson = null)
    {
        if (string.IsNullOrEmpty(eventType)) throw new ArgumentException("eventType is required");
        // NaN and infinity have no JSON spelling: one would make the whole batch unreadable
        if (value.HasValue && (double.IsNaN(value.Value) || double.IsInfinity(value.Value)))
            throw new ArgumentException("value must be a finite number");
        queue.Add(new QueuedEvent {
            event_id = Guid.NewGuid().ToString(),
            player_id = string.IsNullOrEmpty(playerId) ? SystemInfo.deviceUniqueIdentifier : playerId,
            event_time = DateTime.UtcNow.ToString("yyyy-MM-dd'T'HH:mm:ss.fff'Z'", CultureInfo.InvariantCulture),
            event_type = eventType, platform = Application.platform.ToString(), app_version = Application.version,
            properties = propertiesJson, has_value = value.HasValue, value = value.GetValueOrDefault(),
        });
        if (queue.Count >= flushAtCount) flushNow = true;
    }

    /// <summary>`model`'s served prediction for one player: callback(prediction, null) or (null, error).</summary>
    public void Predict(string model, string forPlayerId, Action<Prediction, string> callback)
    {
        StartCoroutine(PredictRoutine(model, forPlayerId, callback));
    }

    IEnumerator PredictRoutine(string model, string forPlayerId, Action<Prediction, string> callback)
    {
        byte[] body = Encoding.UTF8.GetBytes(JsonUtility.ToJson(new PredictRequest { player_id = forPlayerId }));
        using (UnityWebRequest req = Post("/v1/predict/" + Uri.EscapeDataString(model), body))
        {
            yield return req.SendWebRequest();
            // not retried: a late score is rarely worth waiting for (503: no production version yet)
            if (req.responseCode != 200)
            {
                callback(null, "HTTP " + req.responseCode + " " + req.error + " " + req.downloadHandler.text);
                yield break;
            }
            PredictReply reply = JsonUtility.FromJson<PredictReply>(req.downloadHandler.text);
            Prediction p = reply.predictions != null && reply.predictions.Length > 0 ? reply.predictions[0] : null;
            // a player with neither online features nor a batch score comes back with only an error
            if (p == null) callback(null, "no prediction");
            else if (!string.IsNullOrEmpty(p.error)) callback(null, p.error);
            else { p.degraded = reply.degraded; callback(p, null); }
        }
    }

    IEnumerator SendQueued()
    {
        int limit = MaxBatchEvents, count = 0, attempt = 0;
        byte[] body = null;  // kept across retries: the same bytes carry the same event ids
        while (queue.Count > 0)
        {
            if (body == null) body = BuildBatch(queue, limit, out count);
            float wait = -1f;
            using (UnityWebRequest req = Post("/v1/events", body))
            {
                yield return req.SendWebRequest();
                long code = req.responseCode;  // 0: no HTTP answer (offline, refused, timed out)
                if (code == 200 || code == 400)
                {
                    if (code == 400) LogRejected(req.downloadHandler.text, count);
                    queue.RemoveRange(0, count);  // Track only appends: the batch is still the head
                    body = null; attempt = 0;
                    Save();
                }
                else if (code == 413)
                {
                    // over the server's size limit: split, same ids; a lone event that big can never go
                    if (count > 1) limit = Math.Max(1, count / 2);
                    else
                    {
                        Debug.LogError("ml-assets: event " + queue[0].event_id + " is too big to send; dropped");
                        queue.RemoveAt(0);
                    }
                    body = null;
                }
                else
                {
                    if (code == 401) Debug.LogError("ml-assets: API key refused (401); events kept, retrying");
                    wait = Backoff(attempt++, req.GetResponseHeader("Retry-After"));
                }
            }
            if (wait >= 0f) yield return new WaitForSecondsRealtime(wait);
        }
    }

    float Backoff(int attempt, string retryAfter)
    {
        // jitter spreads the retries of many devices coming back after the same outage
        float cap = Mathf.Min(maxBackoffSeconds, Mathf.Pow(2f, Math.Min(attempt, 16)));
        float wait = cap * UnityEngine.Random.Range(0.5f, 1f);
        int seconds;
        if (int.TryParse(retryAfter, out seconds)) wait = Mathf.Max(wait, seconds);  // null parses as false
        return wait;
    }

    UnityWebRequest Post(string path, byte[] body)
    {
        var req = new UnityWebRequest(baseUrl.TrimEnd('/') + path, UnityWebRequest.kHttpVerbPOST);
        req.uploadHandler = new UploadHandlerRaw(body);
        req.downloadHandler = new DownloadHandlerBuffer();
        req.SetRequestHeader("Content-Type", "application/json");
        req.SetRequestHeader("X-API-Key", apiKey);
        req.timeout = requestTimeoutSeconds;
        return req;
    }

    static void LogRejected(string text, int count)
    {
        EventsReply reply = null;
        try { reply = JsonUtility.FromJson<EventsReply>(text); } catch (ArgumentException) { }
        if (reply == null || reply.rejected == null || reply.rejected.Length == 0)
        {
            Debug.LogError("ml-assets: a batch of " + count + " events was refused (400): " + text);
            return;
        }
        foreach (Rejection r in reply.rejected)
            Debug.LogWarning("ml-assets: event " + r.event_id + " (#" + r.index + ") refused: " + r.reason);
    }

    // JSON by hand: JsonUtility would send value 0 for "no value" and "" for every absent text
    static byte[] BuildBatch(List<QueuedEvent> events, int limit, out int count)
    {
        var sb = new StringBuilder("{\"events\":[");
        int bytes = 16;
        count = 0;
        foreach (QueuedEvent e in events)
        {
            if (count == limit) break;
            var one = new StringBuilder(256);
            one.Append("{\"event_id\":").Append(Quote(e.event_id))
               .Append(",\"player_id\":").Append(Quote(e.player_id))
               .Append(",\"event_time\":").Append(Quote(e.event_time))
               .Append(",\"event_type\":").Append(Quote(e.event_type));
            if (e.has_value) one.Append(",\"value\":").Append(e.value.ToString("R", CultureInfo.InvariantCulture));
            if (!string.IsNullOrEmpty(e.platform)) one.Append(",\"platform\":").Append(Quote(e.platform));
            if (!string.IsNullOrEmpty(e.app_version)) one.Append(",\"app_version\":").Append(Quote(e.app_version));
            if (!string.IsNullOrEmpty(e.properties)) one.Append(",\"properties\":").Append(Quote(e.properties));
            string json = one.Append('}').ToString();
            int size = Encoding.UTF8.GetByteCount(json) + 1;
            if (count > 0 && bytes + size > MaxBatchBytes) break;
            if (count > 0) sb.Append(',');
            sb.Append(json);
            bytes += size;
            count++;
        }
        return Encoding.UTF8.GetBytes(sb.Append("]}").ToString());
    }

    static string Quote(string s)
    {
        var sb = new StringBuilder(s.Length + 2).Append('"');
        foreach (char c in s)
        {
            if (c == '"' || c == '\\') sb.Append('\\').Append(c);
            else if (c < ' ') sb.Append("\\u").Append(((int)c).ToString("x4"));
            else sb.Append(c);
        }
        return sb.Append('"').ToString();
    }

    void Save()
    {
        if (Instance != this) return;
        string path = QueuePath, tmp = path + ".tmp";
        try
        {
            // written aside, then moved: a kill mid-write leaves the previous file whole
            File.WriteAllText(tmp, JsonUtility.ToJson(new QueueState { events = queue }));
            if (File.Exists(path)) File.Delete(path);
            File.Move(tmp, path);
        }
        catch (IOException ex) { Debug.LogError("ml-assets: could not save the event queue: " + ex.Message); }
    }

    void Load()
    {
        string path = QueuePath;
        // a kill between Save's delete and move leaves only the finished .tmp
        if (!File.Exists(path) && File.Exists(path + ".tmp")) path += ".tmp";
        if (!File.Exists(path)) return;
        try
        {
            QueueState state = JsonUtility.FromJson<QueueState>(File.ReadAllText(path));
            // saved events go first: events tracked before Start (in other objects' Awake) are newer
            if (state != null && state.events != null) queue.InsertRange(0, state.events);
        }
        catch (ArgumentException ex)
        {
            // moved aside, not overwritten by the next save, so it can still be looked at
            Debug.LogError("ml-assets: unreadable event queue " + path + ": " + ex.Message);
            File.Move(path, path + ".corrupt-" + DateTime.UtcNow.Ticks);
        }
    }
}
