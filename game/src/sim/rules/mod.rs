//! The rules, one plain system function each, grouped in sets that run in
//! this order every tick:
//!
//! 1. [`TickSet::Control`]: start the tick's events, apply the latest input of
//!    each player (direction, dash start, ack).
//! 2. [`TickSet::Lifecycle`]: advance the phase (lobby → countdown → running →
//!    ended), drop players who left or whose grace ran out.
//! 3. [`TickSet::Motion`]: move squirrels, colliding with trees and borders.
//! 4. [`TickSet::Combat`]: dashes knock enemies' acorns loose; dash and stun
//!    timers run down.
//! 5. [`TickSet::Collect`]: pick acorns up, deliver them home and score.
//! 6. [`TickSet::Spawn`]: new acorns on free tiles up to the cap.
//! 7. [`TickSet::Net`]: encode the delta (and the keyframe when due).
//!
//! Motion, Combat, Collect and Spawn only run while the match is running.

pub mod collect;
pub mod collide;
pub mod control;
pub mod dash;
pub mod lifecycle;
pub mod movement;
pub mod scatter;
pub mod spawning;

use bevy_ecs::prelude::*;

use super::resources::{Clock, Phase};

/// The stages of a tick, chained in this order.
#[derive(SystemSet, Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TickSet {
    /// Events rotate; inputs become intents.
    Control,
    /// Phase changes and departures.
    Lifecycle,
    /// Movement and collision.
    Motion,
    /// Dash knock-outs and timers.
    Combat,
    /// Pickup, delivery, scoring.
    Collect,
    /// Acorn spawning.
    Spawn,
    /// Delta and keyframe encoding.
    Net,
}

/// Motion, Combat, Collect and Spawn: the sets that only run while the match
/// is running (one run condition for all four).
#[derive(SystemSet, Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Play;

/// Run condition: the match is in [`Phase::Running`].
pub fn running(clock: Res<Clock>) -> bool {
    clock.phase == Phase::Running
}

/// The whole tick schedule: every rule plugin plus the net encoders.
pub fn build_schedule() -> Schedule {
    let mut schedule = Schedule::default();
    schedule.configure_sets(
        (
            TickSet::Control,
            TickSet::Lifecycle,
            TickSet::Motion,
            TickSet::Combat,
            TickSet::Collect,
            TickSet::Spawn,
            TickSet::Net,
        )
            .chain_ignore_deferred(),
    );
    // Two sync points for commands (spawns, despawns): departures are gone
    // before anything moves, and everything is applied before encoding.
    schedule.add_systems((
        ApplyDeferred
            .after(TickSet::Lifecycle)
            .before(TickSet::Motion),
        ApplyDeferred.after(TickSet::Spawn).before(TickSet::Net),
    ));
    schedule.configure_sets(
        (
            TickSet::Motion,
            TickSet::Combat,
            TickSet::Collect,
            TickSet::Spawn,
        )
            .in_set(Play),
    );
    schedule.configure_sets(Play.run_if(running));
    control::plugin(&mut schedule);
    lifecycle::plugin(&mut schedule);
    movement::plugin(&mut schedule);
    dash::plugin(&mut schedule);
    collect::plugin(&mut schedule);
    spawning::plugin(&mut schedule);
    super::net::plugin(&mut schedule);
    schedule
}

#[cfg(test)]
pub(crate) mod testkit;
