"""Plain words for the candidate: what we noticed and what to do about it."""

from __future__ import annotations

from proctor.flags.model import FlagKind

CANDIDATE_MESSAGES: dict[FlagKind, str] = {
    FlagKind.FACE_ABSENT: "We can't see your face. Please stay in front of the camera.",
    FlagKind.MULTIPLE_FACES: "We can see more than one person. Please make sure you are alone.",
    FlagKind.HEAD_TURNED: "Please face the screen.",
    FlagKind.GAZE_AWAY: "Please keep your eyes on the screen.",
    FlagKind.PHONE_DETECTED: "A phone seems to be in view. Please put it away.",
    FlagKind.IDENTITY_MISMATCH: "We could not confirm it is you. Please face the camera.",
    FlagKind.MULTIPLE_SPEAKERS: "We can hear another voice. Please make sure you are alone.",
    FlagKind.WHISPERING: "We can hear whispering. Please keep the room quiet.",
    FlagKind.CAMERA_BLOCKED: "Your camera seems covered or too dark.",
    FlagKind.VIDEO_LOST: "We are not receiving your video. Please check your camera.",
    FlagKind.AUDIO_LOST: "We are not receiving sound. Please check your microphone.",
    FlagKind.TAB_HIDDEN: "Please stay on the exam tab.",
    FlagKind.WINDOW_BLUR: "Please keep the exam window in focus.",
    FlagKind.FULLSCREEN_EXIT: "You left full screen. Please return to it.",
    FlagKind.PASTE: "Pasting was noticed and recorded.",
}
