//! Step 4: releasing nodes allocated to the stack that no member holds any more (scale-in,
//! replacement), and stack delete (every member goes; done when no node is allocated).

use super::{Action, Pass, Status};

impl Pass<'_> {
    /// Stack delete: drop every member; done when no node is allocated to the stack.
    pub(super) fn delete(&mut self) {
        for r in self.rec.members.values_mut() {
            r.node = None;
        }
        self.rec.members.clear();
        let held = self.nodes.values().any(|n| {
            n.allocation
                .as_ref()
                .is_some_and(|a| a.stack == self.rec.name)
        });
        if !held {
            self.rec.status = Status::DeleteComplete;
            self.rec.reason = "Stack DELETE completed successfully".into();
            let (name, reason) = (self.rec.name.clone(), self.rec.reason.clone());
            self.event(&name, Status::DeleteComplete, &reason);
        }
    }

    /// Release nodes allocated to this stack that no member holds.
    pub(super) fn release_strays(&mut self) {
        let strays: Vec<String> = self
            .nodes
            .values()
            .filter(|n| {
                n.allocation.as_ref().is_some_and(|a| {
                    a.stack == self.rec.name
                        && self
                            .rec
                            .members
                            .get(&a.member)
                            .and_then(|r| r.node.as_deref())
                            != Some(n.name.as_str())
                })
            })
            .map(|n| n.name.clone())
            .collect();
        for node in strays {
            self.actions.push(Action::Release { node });
        }
    }
}
